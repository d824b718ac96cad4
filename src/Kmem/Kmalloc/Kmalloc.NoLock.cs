using System.Runtime.InteropServices;
using Kmem.PageLayer;
using Kmem.Slab;

namespace Kmem;

/// <summary>kmalloc_nolock() and kfree_nolock() (seed 003): allocation and free that never wait.</summary>
public static unsafe partial class Kmalloc
{
    // Only the rare outcomes are counted: a shared counter per call would cost the fast
    // path an atomic on a contended line.
    private static long s_noLockNulls;
    private static long s_noLockRetries;

    /// <summary>
    /// Allocates <paramref name="size"/> bytes (at most <see cref="MaxCachedSize"/>) without
    /// ever waiting: for code that runs inside the allocator (a constructor, destructor,
    /// shrinker or lock hook) or on a thread that must not block. Never blocks, never spins
    /// on a lock held by someone else, never waits for the reclaim thread, never runs a
    /// constructor; returns null instead.
    /// </summary>
    /// <remarks>
    /// It pops from this thread's sheaf of the size class. If that sheaf is busy (this call
    /// re-entered the allocator from inside that bucket) it tries the next larger bucket,
    /// once, as the kernel does on local_lock_is_locked(). Past the sheaf it only try-locks
    /// list_lock and takes a free object, or makes a slab from a block of the page reserve
    /// (64 KiB slabs only: sizes up to 2 KiB). Free the memory with <see cref="FreeNoLock"/>
    /// or <see cref="Free"/>.
    /// </remarks>
    public static void* AllocNoLock(nuint size) => AllocNoLock(size, KmallocFlags.None);

    /// <summary>
    /// <see cref="AllocNoLock(nuint)"/> with flags, as seed 003's kmalloc_nolock takes
    /// __GFP_ACCOUNT and __GFP_ZERO. <see cref="KmallocFlags.Account"/> serves the size from
    /// the accounted kmalloc-cg-N caches and charges the current group through its per-CPU
    /// stock (compare-and-swap) or, when the stock cannot serve it, its counters (atomics):
    /// nothing there waits. Over the group's limit the object goes back and the result is
    /// null, with nothing charged. <see cref="KmallocFlags.Zero"/> clears every usable byte.
    /// </summary>
    public static void* AllocNoLock(nuint size, KmallocFlags flags)
    {
        PageReserve.Activate();
        if (size <= MaxCachedSize)
        {
            SlabCacheCore[] caches = (flags & KmallocFlags.Account) != 0 ? s_accounted : s_caches;
            int c = ClassOf(size);
            void* p = caches[c].TryAllocNoLock(out bool busy);
            if (p == null && busy && c + 1 < caches.Length)
            {
                Interlocked.Increment(ref s_noLockRetries);
                p = caches[++c].TryAllocNoLock(out _);
            }
            if (p != null && (flags & KmallocFlags.Account) != 0)
                p = caches[c].ChargeNoLock(p);
            if (p != null)
            {
                if ((flags & KmallocFlags.Zero) != 0)
                    NativeMemory.Clear(p, (nuint)caches[c].UsableSize);
                return p;
            }
        }
        Interlocked.Increment(ref s_noLockNulls);
        return null;
    }

    /// <summary>
    /// Frees memory from any Kmalloc call (or any slab object, as <see cref="Free"/>)
    /// without ever waiting: into this thread's sheaf when that is free, else onto a
    /// per-CPU lock-free deferred list that later normal calls and the reclaim thread
    /// drain. Null is a no-op.
    /// </summary>
    /// <exception cref="SlabUsageException">As <see cref="Free"/>: an address no slab or large allocation holds, or not an allocation's start; in a ConsistencyChecks cache, a double free, when its list_lock is free (else it is caught when the deferred free runs, and recorded in the statistics, not thrown at that caller). As with <see cref="Free"/>, a double free in a cache without checks is not detected.</exception>
    public static void FreeNoLock(void* p)
    {
        if (p == null)
            return;
        SlabHeader* h = PageMap.Lookup(p);
        if (h != null && h->Kind == BlockKind.Slab)
        {
            SlabCacheCore cache = SlabCacheRegistry.Get(h->CacheIndex);
            if (cache.TryFreeNoLock(p, h))
                return;
            if (cache.IsChecked && !cache.TryPrecheckFree(p, h) && DeferredFrees.TryPushUnchecked(p))
                return;
            DeferredFrees.Push(p, cache.FreeLinkOffset, cache.Name);
            return;
        }
        LargeBlocks.Check(p, h);
        DeferredFrees.Push(p, 0, "kmalloc");   // unmapping may take page_zone or call the OS
    }

    /// <summary>Frees what <see cref="FreeNoLock"/> deferred, now, on this thread; Shrink and the reclaim thread do it too.</summary>
    public static void DrainDeferredFrees() => DeferredFrees.Drain();

    /// <summary>
    /// What <see cref="AllocNoLock(nuint, KmallocFlags)"/> and <see cref="FreeNoLock"/> have
    /// done since the process started. Read without a lock: each count is exact, the
    /// counts together are a moment's, not one instant's.
    /// </summary>
    public static NoLockStatistics GetNoLockStatistics() => new(
        AllocNulls: Volatile.Read(ref s_noLockNulls),
        BucketRetries: Volatile.Read(ref s_noLockRetries),
        ReserveSlabs: PageReserve.Taken,
        FreesDeferred: DeferredFrees.Deferred,
        DeferredDrained: DeferredFrees.Drained,
        DeferredPending: DeferredFrees.Pending,
        DeferredFailures: DeferredFrees.Failures);
}

/// <summary>What <see cref="Kmalloc.AllocNoLock(nuint, KmallocFlags)"/> and <see cref="Kmalloc.FreeNoLock"/> did since the process started.</summary>
/// <param name="AllocNulls">AllocNoLock calls that returned null.</param>
/// <param name="BucketRetries">AllocNoLock calls that found their bucket busy (re-entered) and tried the next one.</param>
/// <param name="ReserveSlabs">Slabs made from the page reserve.</param>
/// <param name="FreesDeferred">FreeNoLock calls that queued the object on a deferred list.</param>
/// <param name="DeferredDrained">Deferred objects freed since.</param>
/// <param name="DeferredPending">Deferred objects waiting now.</param>
/// <param name="DeferredFailures">Deferred frees that failed when they ran (see <c>DeferredFrees.LastFailure</c>).</param>
public readonly record struct NoLockStatistics(
    long AllocNulls,
    long BucketRetries,
    long ReserveSlabs,
    long FreesDeferred,
    long DeferredDrained,
    long DeferredPending,
    long DeferredFailures);
