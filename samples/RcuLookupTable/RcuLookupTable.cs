using System.Runtime.InteropServices;

namespace Kmem.Samples;

/// <summary>
/// A table entry from a TypesafeByRcu cache. <see cref="Magic"/> is set by the cache's
/// constructor and cleared by its destructor, so it says "this memory is an Entry" for as
/// long as the slab lives; <see cref="Lock"/> is the entry's own spinlock, valid in a free
/// entry too (the allocator never writes inside a TypesafeByRcu object).
/// </summary>
[StructLayout(LayoutKind.Sequential)]
public struct Entry
{
    public uint Magic;
    public int Lock;
    /// <summary>The identity: 0 in a free or retired entry.</summary>
    public long Key;
    public long Value;
    /// <summary><see cref="RcuLookupTable.Seal"/> of Key and Value: a torn or stale read shows.</summary>
    public long Seal;
}

/// <summary>
/// A lock-free lookup table over a <see cref="SlabFlags.TypesafeByRcu"/> cache: the
/// pattern the seed introduced SLAB_DESTROY_BY_RCU for. Readers find an entry with no
/// lock, under <see cref="Rcu.Read"/>, then take the entry's own lock and re-check its key,
/// because the entry may have been freed and reused for another key since they loaded
/// its address. Writers free entries at once, with no grace period: the cache keeps the
/// memory an Entry until every reader that could hold it has left its section.
/// </summary>
/// <remarks>
/// Slots are direct-mapped (key modulo capacity, one entry per slot), so keys that share a
/// slot replace each other: a reader then sees another identity and reports a miss.
/// </remarks>
public sealed unsafe class RcuLookupTable : IDisposable
{
    public const uint EntryMagic = 0x7AB1E5;

    private readonly SlabCache<Entry> _cache;
    private readonly nint[] _slots;
    private readonly Lock[] _stripes;

    private long _lookups;
    private long _hits;
    private long _identityChanged;
    private long _errors;

    public RcuLookupTable(int capacity, string name = "rcu-lookup-entry")
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        _slots = new nint[capacity];
        _stripes = Enumerable.Range(0, 64).Select(_ => new Lock()).ToArray();
        _cache = new SlabCache<Entry>(name, new SlabCacheOptions
        {
            Flags = SlabFlags.TypesafeByRcu,
            Constructor = o =>
            {
                var e = (Entry*)o;
                *e = default;
                e->Magic = EntryMagic;
                return true;
            },
            Destructor = o => ((Entry*)o)->Magic = 0,
        });
    }

    /// <summary>The cache underneath (statistics: slabs returned after grace periods).</summary>
    public SlabCache Cache => _cache.Cache;

    public int Capacity => _slots.Length;

    public long Lookups => Volatile.Read(ref _lookups);

    public long Hits => Volatile.Read(ref _hits);

    /// <summary>Lookups whose entry had the key when peeked at, and another (freed and reused, or retired) once locked.</summary>
    public long IdentityChanged => Volatile.Read(ref _identityChanged);

    /// <summary>Lookups that found memory that was not a live Entry, or a broken seal: must stay 0.</summary>
    public long Errors => Volatile.Read(ref _errors);

    public static long Seal(long key, long value) => unchecked(key * (long)0x9E3779B97F4A7C15UL) ^ value;

    /// <summary>Looks <paramref name="key"/> up with no table lock: RCU to reach the entry, the entry's lock to read it.</summary>
    public bool TryGet(long key, out long value)
    {
        value = 0;
        Interlocked.Increment(ref _lookups);
        using (Rcu.Read())
        {
            var e = (Entry*)Volatile.Read(ref _slots[SlotOf(key)]);
            if (e == null)
                return false;
            // Inside the section the slab cannot have gone back to the page layer, so the
            // memory is an Entry (maybe free, maybe another key's) and its lock is a lock.
            if (Volatile.Read(ref e->Magic) != EntryMagic)
            {
                Interlocked.Increment(ref _errors);
                return false;
            }
            // The lock-free peek, as a hash-chain walk compares keys: not our key, a miss.
            if (Volatile.Read(ref e->Key) != key)
                return false;
            LockEntry(e);
            try
            {
                // The re-check: between the peek and the lock the entry may have been retired,
                // freed and reused for another key.
                if (e->Key != key)
                {
                    Interlocked.Increment(ref _identityChanged);
                    return false;
                }
                value = e->Value;
                if (e->Seal != Seal(key, value))
                {
                    Interlocked.Increment(ref _errors);
                    return false;
                }
                Interlocked.Increment(ref _hits);
                return true;
            }
            finally
            {
                UnlockEntry(e);
            }
        }
    }

    /// <summary>Inserts or replaces <paramref name="key"/> (and whatever other key held its slot).</summary>
    public void Set(long key, long value)
    {
        ArgumentOutOfRangeException.ThrowIfZero(key);
        // Maybe an entry freed a moment ago that a reader still holds: its lock orders us.
        Entry* fresh = _cache.Alloc();
        LockEntry(fresh);
        fresh->Key = key;
        fresh->Value = value;
        fresh->Seal = Seal(key, value);
        UnlockEntry(fresh);
        int slot = SlotOf(key);
        nint old;
        lock (_stripes[slot % _stripes.Length])
            old = Interlocked.Exchange(ref _slots[slot], (nint)fresh);
        if (old != 0)
            Retire((Entry*)old);
    }

    /// <summary>Removes <paramref name="key"/>; false if its slot holds another key or none.</summary>
    public bool Remove(long key)
    {
        int slot = SlotOf(key);
        Entry* e;
        lock (_stripes[slot % _stripes.Length])
        {
            e = (Entry*)_slots[slot];
            // Writers of this slot are serialised by the stripe, so the key is stable here.
            if (e == null || e->Key != key)
                return false;
            Volatile.Write(ref _slots[slot], 0);
        }
        Retire(e);
        return true;
    }

    /// <summary>Removes every entry (their slabs then empty out and wait for a grace period).</summary>
    public void Clear()
    {
        for (int slot = 0; slot < _slots.Length; slot++)
        {
            nint old;
            lock (_stripes[slot % _stripes.Length])
                old = Interlocked.Exchange(ref _slots[slot], 0);
            if (old != 0)
                Retire((Entry*)old);
        }
    }

    /// <summary>Unpublished already: the entry loses its identity under its lock and is freed at once.</summary>
    private void Retire(Entry* e)
    {
        LockEntry(e);
        e->Key = 0;
        UnlockEntry(e);
        _cache.Free(e);
    }

    private int SlotOf(long key) => (int)((ulong)key % (ulong)_slots.Length);

    private static void LockEntry(Entry* e)
    {
        var wait = new SpinWait();
        while (Interlocked.CompareExchange(ref e->Lock, 1, 0) != 0)
            wait.SpinOnce();
    }

    private static void UnlockEntry(Entry* e) => Volatile.Write(ref e->Lock, 0);

    /// <summary>Removes everything and destroys the cache (which waits for a grace period).</summary>
    public void Dispose()
    {
        Clear();
        _cache.Dispose();
    }
}
