<?php
// Sessions and cached objects in a replicated repcached pair, through PHP's Memcached
// extension. Both nodes hold every key, so this node uses the cache on its own side and
// moves to the other side when that one fails. php-memcached cannot do that move by
// itself: a request that meets a dead server fails (its server list with
// remove_failed_servers ejects the server only after that failure, for one connection, and
// libmemcached 1.1 leaves it "marked dead" after its retry timeout), so the move is here.

/** The cache servers, own side first: "host:port" strings from the pool's environment. */
function cache_servers(): array
{
    return [getenv('SITE_CACHE_OWN'), getenv('SITE_CACHE_OTHER')];
}

/**
 * Runs $change on this user's session and saves it, through the first cache server that
 * answers. $change gets the session array by reference; what it returns is returned.
 */
function with_session(callable $change)
{
    // A failed start forgets the session id; the next server must get the same one.
    $id = session_id() ?: ($_COOKIE[session_name()] ?? '');
    foreach (cache_servers() as $server) {
        ini_set('session.save_path', $server);
        if ($id !== '') {
            session_id($id);
        }
        // Every warning of the attempt, not only the last: the extension's first one
        // (say, why the session lock could not be taken) is the one that tells why.
        $warnings = [];
        set_error_handler(function (int $no, string $message) use (&$warnings) {
            $warnings[] = $message;
            return true;
        });
        try {
            $started = session_start();
        } catch (Error $e) {
            $started = false; // a new session's id could not be checked there
            $warnings[] = $e->getMessage();
        } finally {
            restore_error_handler();
        }
        if (!$started) {
            log_failure($server, 'session start', implode('; ', $warnings));
            continue; // this server is down: the session is on the other one too
        }
        $result = $change($_SESSION);
        $id = session_id(); // $change may have given the session a new id
        if (@session_write_close()) {
            return $result;
        }
        log_failure($server, 'session save', error_get_last()['message'] ?? '');
        // Saving failed half way: the lock this request took was replicated to the other
        // node, where the retry would wait for it.
        release_own_lock($server, $id);
    }
    throw new RuntimeException('no cache server answered');
}

/** Notes in the PHP error log that a cache server failed a request and the other was asked. */
function log_failure(string $server, string $what, string $why): void
{
    error_log("$what failed at $server, trying the other cache server: $why");
}

/** Deletes the session lock this request took, on every server but the one that failed. */
function release_own_lock(string $failed, string $id): void
{
    $lock = ini_get('memcached.sess_prefix') . 'lock.' . $id;
    foreach (cache_servers() as $server) {
        if ($server !== $failed) {
            cache_client($server)->delete($lock);
        }
    }
}

function cache_client(string $server): Memcached
{
    [$host, $port] = explode(':', $server);
    $m = new Memcached();
    $m->setOption(Memcached::OPT_CONNECT_TIMEOUT, 500);
    $m->setOption(Memcached::OPT_RECV_TIMEOUT, 1000000);
    $m->setOption(Memcached::OPT_SEND_TIMEOUT, 1000000);
    $m->addServer($host, (int) $port);
    return $m;
}

/** Runs $op on the first cache server that answers (a miss is an answer). */
function cache_call(callable $op)
{
    foreach (cache_servers() as $server) {
        $m = cache_client($server);
        $result = $op($m);
        $code = $m->getResultCode();
        if ($code === Memcached::RES_SUCCESS || $code === Memcached::RES_NOTFOUND) {
            return $result;
        }
        log_failure($server, 'cache', $m->getResultMessage());
    }
    throw new RuntimeException('no cache server answered');
}

function cache_get(string $key)
{
    return cache_call(fn (Memcached $m) => $m->get($key));
}

function cache_set(string $key, $value, int $ttl = 3600): void
{
    cache_call(fn (Memcached $m) => $m->set($key, $value, $ttl));
}
