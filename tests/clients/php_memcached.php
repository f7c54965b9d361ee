<?php
// Round trip of PHP's Memcached extension with the binary protocol on.
// Usage: php php_memcached.php PORT [USER PASSWORD]   (SASL when USER is given;
// run php with -d memcached.use_sasl=1 then).
$port = (int)$argv[1];
$m = new Memcached();
$m->setOption(Memcached::OPT_BINARY_PROTOCOL, true);
$m->setOption(Memcached::OPT_COMPRESSION, false);
$m->addServer('127.0.0.1', $port);
if (isset($argv[2])) {
    $m->setSaslAuthData($argv[2], $argv[3]);
}

function check($what, $ok) {
    global $m;
    if (!$ok) {
        fwrite(STDERR, "FAIL: $what (result code " . $m->getResultCode() . ": " . $m->getResultMessage() . ")\n");
        exit(1);
    }
}

check('flush', $m->flush());
check('set', $m->set('a', 'hello'));
check('get', $m->get('a') === 'hello');
check('get miss', $m->get('nokey') === false && $m->getResultCode() === Memcached::RES_NOTFOUND);
check('add existing', $m->add('a', 'x') === false);
check('add new', $m->add('b', 'two'));
check('replace', $m->replace('a', 'world'));
check('replace missing', $m->replace('zz', 'x') === false);
check('get replaced', $m->get('a') === 'world');
check('delete', $m->delete('b'));
check('delete missing', $m->delete('b') === false);
check('set counter', $m->set('n', 10));
check('increment', $m->increment('n', 5) === 15);
check('decrement', $m->decrement('n', 20) === 0);
check('increment with initial', $m->increment('fresh', 1, 7) === 7);
$cas = null;
$v = $m->get('a', null, Memcached::GET_EXTENDED);
check('get extended', is_array($v) && $v['value'] === 'world' && $v['cas'] > 0);
check('cas ok', $m->cas($v['cas'], 'a', 'cas-new'));
check('cas stale', $m->cas($v['cas'], 'a', 'cas-newer') === false);
check('get after cas', $m->get('a') === 'cas-new');
check('touch', $m->touch('a', 100));
check('touch missing', $m->touch('nokey', 100) === false);
check('setMulti', $m->setMulti(['k1' => 'v1', 'k2' => 'v2', 'k3' => ['an', 'array']]));
$got = $m->getMulti(['k1', 'k2', 'k3', 'nokey']);
check('getMulti', $got === ['k1' => 'v1', 'k2' => 'v2', 'k3' => ['an', 'array']]);
check('append', $m->setOption(Memcached::OPT_COMPRESSION, false) && $m->append('k1', '+') && $m->get('k1') === 'v1+');
$stats = $m->getStats();
check('stats', is_array($stats) && count($stats) === 1 && reset($stats)['curr_items'] > 0);
$versions = $m->getVersion();
check('version', strpos(reset($versions), '1.6') === 0);
echo "php memcached round trip: ok\n";
