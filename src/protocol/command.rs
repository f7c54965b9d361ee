//! The logical commands every encoding parses into, and the outcomes they end in.
//!
//! Text, meta and binary are three spellings of one set of commands: `incr k 1`,
//! `ma k D1` and a binary INCREMENT packet all become [`Command::Arith`]. Each encoding keeps
//! what only shapes its reply (text `noreply`, meta's return flags, binary's header and
//! quiet bit) beside the command, in its own reply type, and renders the outcomes below.
//! `server::command` executes each family in one place.
//!
//! This is the protocol's own vocabulary: it names nothing in the store. A CAS value is a
//! [`Cas`], an expiry as a client sent it is an [`Exptime`], a storage verb is a [`SetMode`];
//! the server maps them to and from the store's types.

use bytes::Bytes;

/// A CAS value as clients send and see it (0 when `-C` turns CAS off).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cas(pub u64);

/// An expiry as the client sent it: 0 is never, negative is already expired, up to 30 days
/// is relative seconds, beyond that a unix time. Wide enough for binary's unsigned 32 bits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Exptime(pub i64);

/// Storage verbs: memcached's six storage commands, with `cas` as a compare on set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetMode {
    Set,
    Add,
    Replace,
    Append,
    Prepend,
}

/// The run-time settings of [`Command::Tune`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Tunable {
    /// `lru_crawler sleep <us>`
    CrawlerSleep(u32),
    /// `lru_crawler tocrawl <n>`
    CrawlerToCrawl(u32),
    /// `slabs automove <0|1|2>`
    SlabAutomove(u32),
    /// `slabs automove ratio <f>`
    SlabAutomoveRatio(f64),
    /// `lru tune <hot %> <warm %> <hot factor> <warm factor>`
    LruTune {
        hot_pct: u32,
        warm_pct: u32,
        hot_factor: f64,
        warm_factor: f64,
    },
    /// `lru mode flat|segmented`
    LruSegmented(bool),
    /// `lru temp_ttl <seconds>` (negative: off)
    TempTtl(i32),
}

/// One request, whatever encoding it came in.
#[derive(Debug)]
pub enum Command<'a> {
    // Retrieval
    Get(Get<'a>),
    /// A text get line with a key over the limit after valid ones: memcached reads the keys
    /// before it as the get would (counted, and touched by gat) before it refuses the line,
    /// answering only the error.
    GetBadKey(Get<'a>),
    /// `me`: an item's metadata, without touching it.
    Debug {
        key: &'a [u8],
    },
    // Storage
    Store(Store<'a>),
    /// A storage command whose value exceeds `-I`: refused before its value arrives.
    TooLarge(TooLarge<'a>),
    Delete(Delete<'a>),
    Arith(Arith<'a>),
    Touch {
        key: &'a [u8],
        exptime: Exptime,
    },
    /// `flush_all [delay]`; `delay` is None if it was not a number (memcached still counts
    /// the command before refusing it).
    Flush {
        delay: Option<Exptime>,
    },
    /// `stats [group [arg]]`
    Stats {
        group: &'a [u8],
        arg: &'a [u8],
    },
    // Admin and the rest
    Version,
    Noop,
    Quit,
    Verbosity {
        level: u32,
    },
    CacheMemlimit {
        megabytes: u32,
    },
    /// `shutdown [graceful]`; `graceful` is None for an unknown mode (answered only once
    /// `-A` has allowed shutdown at all, as memcached does).
    Shutdown {
        graceful: Option<bool>,
    },
    /// `stats cachedump <class> <limit>`: up to `limit` items (0: no limit) of a class.
    Cachedump {
        class: u32,
        limit: u32,
    },
    /// `lru_crawler metadump <classes>`: every live item if `all`, else none.
    Metadump {
        all: bool,
    },
    /// `lru_crawler enable|disable`.
    Crawler {
        enable: bool,
    },
    /// `lru_crawler crawl`, or a metadump that dumps nothing: refused while the crawler is
    /// disabled, else answered `reply`.
    Crawl {
        reply: &'static [u8],
    },
    /// `slabs reassign <src> <dst>`; None when they are not two numbers.
    SlabsReassign {
        classes: Option<(i32, i32)>,
    },
    /// A tuning knob of memcached's machinery set at run time (`lru_crawler sleep`, `slabs
    /// automove`, …): nothing here acts on it, `stats settings` shows it; answers `OK`.
    Tune(Tunable),
    /// `watch [kinds]`: the connection becomes a stream of log lines; None when a kind is
    /// one memcached does not know.
    Watch {
        kinds: Option<WatchKinds>,
    },
    /// Admin commands accepted for compatibility with a fixed answer (`lru`, …).
    Fixed {
        reply: &'static [u8],
    },
    // Authentication (SASL, binary only)
    SaslMechs,
    SaslAuth {
        step: bool,
        mech: &'a [u8],
        data: &'a [u8],
    },
}

/// What a `watch` asks to see, as a set of memcached's log types. The kinds memcached
/// knows that nothing here logs (its proxy's, raw commands, system events) are accepted
/// and show nothing, as they show nothing on a memcached that is not a proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatchKinds(pub u8);

impl WatchKinds {
    /// Every fetch of an item, including the look a write takes first (`item_get`).
    pub const FETCHERS: u8 = 1;
    /// Every storage command's outcome (`item_store`).
    pub const MUTATIONS: u8 = 2;
    /// Items evicted for room (`eviction`).
    pub const EVICTIONS: u8 = 4;
    /// Connections opened and closed (`conn_new`, `conn_close`).
    pub const CONNEVENTS: u8 = 8;

    /// The kinds `watch`'s arguments name (none: fetchers, as in memcached); None for a
    /// word memcached does not know.
    pub fn parse<'a>(words: impl Iterator<Item = &'a [u8]>) -> Option<WatchKinds> {
        let mut kinds = 0;
        let mut any = false;
        for w in words {
            any = true;
            kinds |= match w {
                b"fetchers" => Self::FETCHERS,
                b"mutations" => Self::MUTATIONS,
                b"evictions" => Self::EVICTIONS,
                b"connevents" => Self::CONNEVENTS,
                b"rawcmds" | b"sysevents" | b"proxyreqs" | b"proxyevents" | b"proxyuser" => 0,
                _ => return None,
            };
        }
        Some(WatchKinds(if any { kinds } else { Self::FETCHERS }))
    }
}

/// get, gets, gat, gats, mg, and binary get/getk/gat/touch: a read of one or more keys.
#[derive(Debug, Clone, Copy)]
pub struct Get<'a> {
    pub keys: Keys<'a>,
    /// New expiry for each hit (gat, mg `T`, binary touch); counted as a touch.
    pub touch: Option<Exptime>,
    /// mg `u`: leave access time and fetched bit alone.
    pub no_update: bool,
    /// mg `N`: create an empty item on a miss, with this expiry.
    pub vivify: Option<Exptime>,
    /// mg `T` came after `N`: an item created takes the touch's expiry instead.
    pub touch_last: bool,
    /// mg `R`: win the recache token if the item expires sooner than this.
    pub recache: Option<Exptime>,
    /// mg `R` came before `T`: it compares the expiry the item had.
    pub recache_first: bool,
    /// mg with a long opaque: it acts, then answers an error. memcached stops before it
    /// hands out the win token or counts a hit (a miss it has counted already).
    pub refused: bool,
}

impl Get<'static> {
    /// A plain `get` (no touch, no mg flags) whose keys are still to be filled in.
    pub fn plain() -> Self {
        Get {
            keys: Keys::Spaced(&[]),
            touch: None,
            no_update: false,
            vivify: None,
            touch_last: false,
            recache: None,
            recache_first: false,
            refused: false,
        }
    }
}

impl Get<'_> {
    /// The expiry of an item `vivify` creates: the later of mg's `N` and `T`, as memcached
    /// applies them in order.
    pub fn created_expiry(&self) -> Option<Exptime> {
        self.vivify.map(|n| match self.touch {
            Some(t) if self.touch_last => t,
            _ => n,
        })
    }
}

/// The keys of a read: one key (which may hold any byte), or a text key list.
#[derive(Debug, Clone, Copy)]
pub enum Keys<'a> {
    One(&'a [u8]),
    /// Space-separated keys, each already validated.
    Spaced(&'a [u8]),
}

impl<'a> Keys<'a> {
    pub fn iter(self) -> impl Iterator<Item = &'a [u8]> {
        let (one, list) = match self {
            Keys::One(k) => (Some(k), &[][..]),
            Keys::Spaced(l) => (None, l),
        };
        one.into_iter()
            .chain(list.split(|&b| b == b' ').filter(|k| !k.is_empty()))
    }
}

/// set, add, replace, append, prepend, cas, ms, and their binary opcodes.
#[derive(Debug, Clone, Copy)]
pub struct Store<'a> {
    pub mode: SetMode,
    pub key: &'a [u8],
    pub flags: u32,
    pub exptime: Exptime,
    pub data: &'a [u8],
    /// Store only if the item's CAS is this (`cas`, ms `C`, a binary CAS).
    pub compare_cas: Option<Cas>,
    /// ms `I`: a CAS older than the item's still stores, but marks the item stale.
    pub invalidate: bool,
    /// ms `E`: the CAS to give the new value.
    pub new_cas: Option<Cas>,
    /// ms `N` with append/prepend: create the item on a miss, with this expiry.
    pub vivify: Option<Exptime>,
    /// ms `b`: the key was sent base64-encoded (it is kept decoded).
    pub key_binary: bool,
}

impl<'a> Store<'a> {
    pub fn new(mode: SetMode, key: &'a [u8], data: &'a [u8]) -> Self {
        Store {
            mode,
            key,
            flags: 0,
            exptime: Exptime(0),
            data,
            compare_cas: None,
            invalidate: false,
            new_cas: None,
            vivify: None,
            key_binary: false,
        }
    }
}

/// A storage request refused from its header (see [`Refusal`]). Its value is skipped, not
/// buffered.
#[derive(Debug, Clone, Copy)]
pub struct TooLarge<'a> {
    pub key: &'a [u8],
    pub why: Refusal,
    /// Drop the key's old value, so a failed write never leaves stale data behind
    /// (memcached does for a text or binary `set` and every `ms`).
    pub drop_old: bool,
    /// Bytes of the refused value still to skip.
    pub swallow: usize,
}

/// Why a storage request is refused before its value is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Over `-I`.
    TooLarge,
    /// No room in `-m` to take the value in: memcached's failed item allocation.
    NoMemory,
    /// The same for an item memcached would chain from its 512 KB chunks: it takes those as
    /// the value arrives, and says so partway through (nothing counted, the old value kept).
    NoMemoryReading,
}

/// delete, md, binary delete.
#[derive(Debug, Clone, Copy, Default)]
pub struct Delete<'a> {
    pub key: &'a [u8],
    pub compare_cas: Option<Cas>,
    /// md `I`: mark stale and bump the CAS instead of removing.
    pub invalidate: bool,
    /// md `T` with `I`: new expiry.
    pub exptime: Option<Exptime>,
    pub new_cas: Option<Cas>,
    /// md `x`: empty the value but keep the item.
    pub strip_value: bool,
}

/// incr, decr, ma, binary increment/decrement.
#[derive(Debug, Clone, Copy, Default)]
pub struct Arith<'a> {
    pub key: &'a [u8],
    pub incr: bool,
    pub delta: u64,
    pub compare_cas: Option<Cas>,
    /// Create on a miss with (expiry, initial value): ma `N`/`J`, binary's expiration.
    pub vivify: Option<(Exptime, u64)>,
    /// ma `T`: new expiry on success.
    pub exptime: Option<Exptime>,
    /// ma `T` came after `N`: an item created takes T's expiry instead.
    pub touch_last: bool,
    pub new_cas: Option<Cas>,
}

impl Arith<'_> {
    /// What an item `vivify` creates starts as: the later of ma's `N` and `T` gives its
    /// expiry, as memcached applies them in order.
    pub fn created(&self) -> Option<(Exptime, u64)> {
        self.vivify.map(|(n, initial)| match self.exptime {
            Some(t) if self.touch_last => (t, initial),
            _ => (n, initial),
        })
    }
}

/// A live item as a read saw it, borrowed while the store holds it, so a hit is rendered
/// without copying its value.
#[derive(Debug, Clone, Copy)]
pub struct Hit<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// The value as a reference-counted buffer, when the store keeps it in one (a large
    /// value): a reply may hold that instead of copying (see [`ReplyBuf::value`]).
    pub shared: Option<&'a Bytes>,
    pub flags: u32,
    pub cas: Cas,
    /// Seconds left to live; None never expires.
    pub ttl: Option<u32>,
    /// The TTLs mg's `t` shows, depending on where it stands among the flags.
    pub ttls: TtlTrail,
    /// Seconds since the item was last read, before this request.
    pub idle: u32,
    /// Whether it had been read before this request.
    pub fetched: bool,
    /// The key was stored from a base64 (`b`) request; meta echoes it encoded.
    pub key_binary: bool,
    /// mg recache: this client won the right to recache (`W`), another already has (`Z`),
    /// the item is stale (`X`).
    pub won: bool,
    pub token_sent: bool,
    pub stale: bool,
    /// memcached's size of the item (`me`'s `size=`).
    pub size: usize,
    /// memcached's slab class for that size (`me`'s `cls=`).
    pub class: u32,
}

/// The TTLs a meta command's `t` can show. memcached works through a request's flags in
/// order, so `t` shows the TTL as the flags before it left it: the item's own TTL, then
/// what `T` set, and on an item the request created (which starts with none) what `N` set.
/// Each is seconds left to live; None never expires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TtlTrail {
    /// Before the request (None for an item it created).
    pub before: Option<u32>,
    /// What `T` set (read only where a `T` flag was given).
    pub touch: Option<u32>,
    /// What `N` set, if the request created the item; None: `N` changed nothing.
    pub vivify: Option<Option<u32>>,
}

impl TtlTrail {
    /// A trail with no changes: `t` shows `ttl` wherever it stands.
    pub fn still(ttl: Option<u32>) -> Self {
        TtlTrail {
            before: ttl,
            touch: ttl,
            vivify: None,
        }
    }

    /// The TTL after flag `c`, given the TTL before it.
    pub fn after(&self, c: u8, ttl: Option<u32>) -> Option<u32> {
        match (c, self.vivify) {
            (b'T', _) => self.touch,
            (b'N', Some(v)) => v,
            _ => ttl,
        }
    }
}

/// How a storage command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    Stored {
        cas: Cas,
        size: usize,
    },
    NotStored,
    Exists,
    NotFound,
    TooLarge,
    OutOfMemory,
    /// memcached's words for a chained item it ran out of chunks for.
    OutOfMemoryReading,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    NotFound,
    /// The CAS did not match.
    Exists,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    Value {
        value: u64,
        cas: Cas,
        ttls: TtlTrail,
        /// The item was created (ma `N`): answered even with `q`, as memcached 1.6.18 does.
        created: bool,
    },
    NotFound,
    /// No memory for the changed number, or for the item `creating` would have made.
    OutOfMemory {
        creating: bool,
    },
    Exists,
    NonNumeric,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flushed {
    Done,
    /// `-F`.
    NotAllowed,
    BadDelay,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Without `-A`.
    NotEnabled,
    BadMode,
    Accepted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemLimit {
    Set,
    TooSmall,
    /// Over a billion megabytes: taken for bytes given where megabytes are asked.
    NotMegabytes,
}

/// Which encoding a request came in. Where memcached counts the same outcome differently
/// per encoding, the executor asks this (never to choose reply bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Text,
    Meta,
    Binary,
}

/// Where replies are written: bytes appended to a buffer, except that a value goes through
/// [`ReplyBuf::value`], so a connection can queue a large one by reference instead of
/// copying it (a stalled reader then holds a reference, not a copy).
pub trait ReplyBuf {
    fn bytes(&mut self) -> &mut Vec<u8>;
    /// Appends `value`; `shared` is the same bytes in a reference-counted buffer, if any.
    fn value(&mut self, value: &[u8], shared: Option<&Bytes>);
}

impl ReplyBuf for Vec<u8> {
    #[inline]
    fn bytes(&mut self) -> &mut Vec<u8> {
        self
    }

    #[inline]
    fn value(&mut self, value: &[u8], _shared: Option<&Bytes>) {
        self.extend_from_slice(value);
    }
}

/// An encoding's answers to every outcome. Commands an encoding cannot express are never
/// parsed from it, so it leaves those methods at their defaults (no reply).
pub trait Reply {
    const ENCODING: Encoding;
    /// A retrieval hit, rendered while the store still holds the item.
    fn hit(&self, _out: &mut impl ReplyBuf, _hit: &Hit<'_>) {}
    /// A retrieval miss of `key`.
    fn miss(&self, _out: &mut Vec<u8>, _key: &[u8]) {}
    /// After every key of a read (text `END`).
    fn end(&self, _out: &mut Vec<u8>) {}
    /// `me`: the item's metadata, or None for a miss.
    fn debug(&self, _out: &mut Vec<u8>, _hit: Option<&Hit<'_>>) {}
    fn stored(&self, _out: &mut Vec<u8>, _o: Stored) {}
    fn deleted(&self, _out: &mut Vec<u8>, _o: Deleted) {}
    fn counted(&self, _out: &mut Vec<u8>, _o: Counted) {}
    fn touched(&self, _out: &mut Vec<u8>, _hit: bool) {}
    fn flushed(&self, _out: &mut Vec<u8>, _o: Flushed) {}
    /// Stats: `write` appends memcached's text lines (`STAT name value\r\n`…, `END\r\n`,
    /// or an error line) to the buffer it is given.
    fn stats(&self, _out: &mut Vec<u8>, _write: impl FnOnce(&mut Vec<u8>)) {}
    /// `stats detail dump`: `write` appends the text dump (`PREFIX …` lines, `END`).
    fn detail_dump(&self, out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
        self.stats(out, write);
    }
    fn version(&self, _out: &mut Vec<u8>, _version: &str) {}
    /// verbosity's answer.
    fn ok(&self, _out: &mut Vec<u8>) {}
    /// mn, binary noop.
    fn noop(&self, _out: &mut Vec<u8>) {}
    fn quit(&self, _out: &mut Vec<u8>) {}
    fn mem_limit(&self, _out: &mut Vec<u8>, _o: MemLimit) {}
    fn shutdown(&self, _out: &mut Vec<u8>, _o: Shutdown) {}
    fn fixed(&self, _out: &mut Vec<u8>, _reply: &'static [u8]) {}
    fn sasl_mechs(&self, _out: &mut Vec<u8>, _mechs: &[u8]) {}
    fn authenticated(&self, _out: &mut Vec<u8>, _ok: bool) {}
    /// A SASL request memcached refuses before trying it (a mechanism name too long).
    fn sasl_invalid(&self, _out: &mut Vec<u8>) {}
}
