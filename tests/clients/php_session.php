<?php
// A PHP session through the Memcached extension's session handler, locking on (its default).
// Usage: php php_session.php HOST:PORT[,HOST:PORT] SESSION_ID write VALUE
//        php php_session.php HOST:PORT[,HOST:PORT] SESSION_ID read
// Prints "session: VALUE" (or "session: <none>") after session_start().
ini_set('session.save_handler', 'memcached');
ini_set('session.save_path', $argv[1]);
ini_set('session.use_cookies', '0');
ini_set('session.use_strict_mode', '0');
session_id($argv[2]);
if (!session_start()) {
    fwrite(STDERR, "session_start failed\n");
    exit(1);
}
if ($argv[3] === 'write') {
    $_SESSION['user'] = $argv[4];
}
echo 'session: ', $_SESSION['user'] ?? '<none>', "\n";
if (!session_write_close()) {
    fwrite(STDERR, "session_write_close failed\n");
    exit(1);
}
