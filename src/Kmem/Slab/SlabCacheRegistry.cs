using Kmem.Locking;

namespace Kmem.Slab;

/// <summary>
/// Every live cache by index (slab_caches): the slab header stores the index, so
/// kmalloc's Free and diagnostics go from an address to its cache without a lock.
/// Creation, merging and disposal hold <see cref="Lock"/> (class slab_mutex), the
/// outermost lock of the order. Only root caches are here; an alias lives in its root.
/// Statistics read it without the lock (<see cref="SnapshotUnlocked"/>): slot writes are
/// release stores and the array is replaced by one, so a reader that finds a cache sees
/// all its constructor wrote before registering it (all but its index, which statistics
/// do not use).
/// </summary>
internal static class SlabCacheRegistry
{
    public static readonly KLock Lock = new("slab_mutex");

    private static SlabCacheCore?[] s_caches = new SlabCacheCore?[64];

    /// <summary>The cache at <paramref name="index"/>; indexes come from slab headers, which outlive no cache.</summary>
    public static SlabCacheCore Get(int index) => Volatile.Read(ref s_caches)[index]!;

    /// <summary>
    /// Registers a new root cache. Caller holds slab_mutex. The first registration in the
    /// process also publishes Kmem's metrics (<see cref="Diagnostics.KmemMetrics.Activate"/>:
    /// one volatile read after that).
    /// </summary>
    public static int AddLocked(SlabCacheCore cache)
    {
        System.Diagnostics.Debug.Assert(Lock.IsHeldByCurrentThread, "slab_mutex not held");
        int i = Array.IndexOf(s_caches, null);
        if (i < 0)
        {
            i = s_caches.Length;
            var grown = new SlabCacheCore?[i * 2];
            s_caches.CopyTo(grown, 0);
            Volatile.Write(ref s_caches, grown);
        }
        // Release: an unlocked reader that finds the cache sees its constructor's writes.
        Volatile.Write(ref s_caches[i], cache);
        Diagnostics.KmemMetrics.Activate();
        return i;
    }

    /// <summary>Caller holds slab_mutex.</summary>
    public static void RemoveLocked(int index)
    {
        System.Diagnostics.Debug.Assert(Lock.IsHeldByCurrentThread, "slab_mutex not held");
        Volatile.Write(ref s_caches[index], null);
    }

    /// <summary>The live root caches, newest last. Caller holds slab_mutex.</summary>
    public static IEnumerable<SlabCacheCore> RootsLocked() => s_caches.OfType<SlabCacheCore>();

    /// <summary>
    /// The live root caches, in creation-slot order. A cache disposed with live objects
    /// keeps its slot (its leaked slabs still name it) but is not listed.
    /// </summary>
    public static List<SlabCacheCore> Snapshot()
    {
        using (Lock.Scope())
            return [.. s_caches.OfType<SlabCacheCore>().Where(c => !c.IsDisposed)];
    }

    /// <summary>
    /// Every registered root cache, disposed ones included (those that leaked keep their
    /// slot), read without slab_mutex. For statistics and metrics, which must never wait:
    /// Dispose holds slab_mutex while destructors run, and a destructor may be stuck. The
    /// list may miss a cache being created and include one being disposed (test
    /// <see cref="SlabCacheCore.IsDisposed"/>); a reader holding an array replaced since
    /// may see a cache removed after the replacement, disposed by then.
    /// </summary>
    public static List<SlabCacheCore> SnapshotUnlocked()
    {
        SlabCacheCore?[] caches = Volatile.Read(ref s_caches);
        var list = new List<SlabCacheCore>();
        for (int i = 0; i < caches.Length; i++)
        {
            if (Volatile.Read(ref caches[i]) is { } c)
                list.Add(c);
        }
        return list;
    }
}
