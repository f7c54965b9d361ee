<?php
// A small app in the seed's shape: log in (writes the session), attach a file name to a
// draft (writes a cache object), view the draft (reads both). Every answer is JSON and
// says which node served it.
require __DIR__ . '/cache.php';

function reply(int $status, array $body): void
{
    http_response_code($status);
    header('Content-Type: application/json');
    echo json_encode(['node' => getenv('SITE_NODE')] + $body), "\n";
}

function draft_key(string $user): string
{
    return 'draft:' . $user;
}

try {
    $path = parse_url($_SERVER['REQUEST_URI'] ?? '/', PHP_URL_PATH);
    switch ($path) {
        case '/login':
            $user = (string) ($_GET['user'] ?? '');
            if ($user === '') {
                reply(400, ['error' => 'login needs ?user=NAME']);
                break;
            }
            with_session(function (array &$s) use ($user) {
                // A new id at login: an id planted before it is worth nothing after it.
                session_regenerate_id(true);
                $s['user'] = $user;
            });
            reply(200, ['user' => $user]);
            break;
        case '/attach':
            $file = (string) ($_GET['file'] ?? '');
            $user = with_session(fn (array &$s) => $s['user'] ?? null);
            if ($user === null || $file === '') {
                reply($user === null ? 403 : 400, ['user' => $user, 'error' => 'log in, then attach ?file=NAME']);
                break;
            }
            $draft = cache_get(draft_key($user)) ?: ['files' => []];
            $draft['files'][] = $file;
            cache_set(draft_key($user), $draft);
            reply(200, ['user' => $user, 'files' => $draft['files']]);
            break;
        case '/view':
            $user = with_session(fn (array &$s) => $s['user'] ?? null);
            $draft = $user === null ? null : cache_get(draft_key($user));
            reply(200, ['user' => $user, 'files' => $draft['files'] ?? []]);
            break;
        default:
            reply(404, ['error' => 'try /login?user=NAME, /attach?file=NAME, /view']);
    }
} catch (RuntimeException $e) {
    reply(503, ['error' => $e->getMessage()]);
}
