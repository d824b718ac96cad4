using System.Runtime.ExceptionServices;
using Kmem.Locking;
using Kmem.Sheaves;
using Kmem.Slab;

namespace Kmem;

/// <summary>Shrink, Dispose, the reclaim thread's work on one cache, and statistics.</summary>
public sealed unsafe partial class SlabCache
{
    private readonly KLock _drainLock = new("sheaf_drain");
    private volatile bool _disposed;

    /// <summary>
    /// Returns every empty slab to the page layer, after draining the objects parked in
    /// every thread's sheaf (idle and exited threads included) and in the barn; the
    /// destructor runs on their objects, here, on the calling thread. A TypesafeByRcu cache
    /// waits here for a grace period first (so never call it inside a read-side section).
    /// </summary>
    /// <exception cref="SlabUsageException">The cache is disposed.</exception>
    /// <exception cref="Exception">The first exception a destructor threw (a bug in it); every slab was freed regardless.</exception>
    public void Shrink()
    {
        if (_root != this)
        {
            if (_disposed)
                ThrowDisposed(null);
            _root.Shrink();
            return;
        }
        // Objects FreeNoLock deferred are not on any sheaf yet: free them first.
        DeferredFrees.Drain();
        Exception? failure;
        using (_drainLock.Scope())
        {
            if (_disposed)
                ThrowDisposed(null);
            SlabHeader* release = null;
            DrainSheaves(ref release);
            using (_listLock.Scope())
            {
                UnlinkEmpties(keep: 0, long.MaxValue, ref release);
                TakeRollbacks(long.MaxValue, ref release);
                TakeGracePeriodSlabs(all: true, ref release);
            }
            failure = FreeSlabsAfterGracePeriod(release, SlabFreedBy.Shrink);
        }
        Pages.Trim();
        if (failure != null)
            ExceptionDispatchInfo.Throw(failure);
    }

    /// <summary>
    /// Destroys the cache: parked objects are drained, destructors run, and every slab is
    /// returned. With live objects it refuses, names them, and leaves the cache as it was,
    /// usable. Disposing twice is allowed. Must not run concurrently with use of the cache.
    /// A merged cache is destroyed when its last alias is disposed (see <see cref="MergedInto"/>).
    /// It first waits for pending <see cref="Kmalloc.FreeRcu"/> frees and, for a
    /// TypesafeByRcu cache, for a grace period before its slabs' memory is returned.
    /// </summary>
    /// <exception cref="SlabUsageException">Objects are still allocated.</exception>
    public void Dispose()
    {
        // Objects of this cache may be waiting in Kmalloc.FreeRcu (kvfree_rcu_barrier in
        // kmem_cache_destroy). Waited for before slab_mutex: a callback may take it.
        if (Rcu.PendingCallbacks != 0 && !Rcu.IsCallbackThread)
            Rcu.Barrier();
        using (SlabCacheRegistry.Lock.Scope())
        {
            if (_root != this)
            {
                DisposeAlias();
                return;
            }
            if (!_rootHandleLive)
                return;
            if (_refs == 1)
                DestroyCore();
            _rootHandleLive = false;
            _refs--;
        }
    }

    /// <summary>Frees everything, or refuses with live objects and changes nothing. Caller holds slab_mutex.</summary>
    private void DestroyCore()
    {
        Exception? failure;
        using (_drainLock.Scope())
        {
            SlabHeader* release = null;
            DrainSheaves(ref release);
            long live;
            List<nint> named = [];
            using (_listLock.Scope())
            {
                live = _objectsOut;
                if (live != 0)
                {
                    named = LiveObjects(8);
                }
                else
                {
                    UnlinkEmpties(keep: 0, long.MaxValue, ref release);
                    TakeRollbacks(long.MaxValue, ref release);
                    TakeGracePeriodSlabs(all: true, ref release);
                }
            }
            if (live != 0)
            {
                // Refuse, and leave the cache as it was: drained, but whole and usable.
                ReleaseSlabs(release, SlabFreedBy.Shrink, out _);
                string list = string.Join(", ", named.Select(a => $"0x{a:x}"));
                throw new SlabUsageException(Name, named.Count > 0 ? named[0] : 0,
                    $"cache '{Name}': Dispose with {live} live object(s) ({list}{(live > named.Count ? ", ..." : "")}); free them first")
                { LiveObjects = live };
            }
            failure = FreeSlabsAfterGracePeriod(release, SlabFreedBy.Shrink);
            using (_sheafTableLock.Scope())
            {
                _disposed = true;
                Sheaf*[] table = _sheaves;
                Volatile.Write(ref _sheaves, new Sheaf*[1]);
                foreach (SlabCache alias in _aliases)
                    Volatile.Write(ref alias._sheaves, new Sheaf*[1]);
                foreach (Sheaf* s in table)
                {
                    if (s != null)
                        Sheaf.Destroy(s);
                }
            }
            _barn.Dispose();
        }
        Pages.Trim();
        SlabCacheRegistry.RemoveLocked(_index);
        if (failure != null)
            ExceptionDispatchInfo.Throw(failure);
    }

    /// <summary>
    /// The reclaim thread's work on this cache: slabs of failed construction, then empty
    /// slabs beyond the reserve (<see cref="ReclaimMode.Excess"/>), or every parked object
    /// and every empty slab (<see cref="ReclaimMode.Trim"/>). Destructor calls are charged
    /// to <paramref name="budget"/>; returns true when work is left for another pass.
    /// </summary>
    internal bool ReclaimWork(ReclaimMode mode, ref long budget, out long freedSlabs, out Exception? failure)
    {
        failure = null;
        freedSlabs = 0;
        if (mode == ReclaimMode.Excess && Volatile.Read(ref _rollbackCount) == 0
            && (!_lifecycle || Volatile.Read(ref _emptyCount) <= _minEmptySlabs)
            && Volatile.Read(ref _rcuWaitingCount) == 0)
            return false;
        bool more;
        using (_drainLock.Scope())
        {
            if (_disposed)
                return false;
            SlabHeader* release = null;
            if (mode == ReclaimMode.Trim)
                DrainSheaves(ref release);
            long keep = mode == ReclaimMode.Trim ? 0 : _minEmptySlabs;
            // Bounded destructor work: at least one slab, at most the budget's worth.
            long maxSlabs = _lifecycle ? Math.Max(1, budget / _layout.Objects) : long.MaxValue;
            // Slabs whose grace period has ended, freed now; the RCU callback that kicked
            // this pass comes after the grace period, so they are ripe by then.
            SlabHeader* ripe = null;
            using (_listLock.Scope())
            {
                long taken = TakeRollbacks(maxSlabs, ref release);
                UnlinkEmpties(keep, maxSlabs - taken, ref release);
                more = _rollback != null || (_emptyCount > keep && (_lifecycle || mode == ReclaimMode.Trim));
                TakeGracePeriodSlabs(all: false, ref ripe);
            }
            // Counts the slabs the drain emptied as well: all of them are this pass's work.
            failure = ReleaseSlabs(release, SlabFreedBy.Reclaim, out freedSlabs);
            if (ripe != null)
            {
                Exception? late = FreeSlabs(ripe, SlabFreedBy.Reclaim, out long freedRipe);
                failure ??= late;
                freedSlabs += freedRipe;
            }
        }
        if (_lifecycle)
            budget -= freedSlabs * _layout.Objects;
        return more;
    }

    /// <summary>
    /// Slow-path entries (refills and flushes of sheaves; every call of a checked cache).
    /// Unchanged over a while means the cache is idle. Counted without an atomic: a lost
    /// increment only delays noticing activity. Statistics reads do not count.
    /// </summary>
    private long _activity;

    internal long Activity => Volatile.Read(ref _activity);

    /// <summary>The reclaim thread's idle bookkeeping for this cache (touched by that thread only).</summary>
    internal ReclaimIdleState IdleState { get; } = new();

    public SlabCacheStatistics GetStatistics()
    {
        if (_root != this)
            return _root.GetStatistics();
        long cached = 0;
        using (_sheafTableLock.Scope())
        {
            foreach (Sheaf* s in _sheaves)
            {
                if (s != null)
                    cached += Volatile.Read(ref s->Count);
            }
        }
        if (!_disposed)
            cached += _barn.Objects;
        using (_listLock.Scope())
        {
            long active = _objectsOut - cached;
            long total = _slabCount * _layout.Objects;
            return new SlabCacheStatistics(
                ActiveObjects: active,
                TotalObjects: total,
                Slabs: _slabCount,
                BytesHeld: (_slabCount + _rollbackCount + _rcuWaitingCount) * _layout.SlabSize,
                ConstructorCalls: Volatile.Read(ref _ctorCalls),
                ConstructorFailures: Volatile.Read(ref _ctorFailures),
                DestructorCalls: Volatile.Read(ref _dtorCalls),
                ObjectSize: ObjectSize,
                Stride: _layout.Stride,
                ObjectsPerSlab: _layout.Objects,
                SlabSize: _layout.SlabSize,
                CachedObjects: cached,
                PartialSlabs: _partialCount,
                EmptySlabs: _emptyCount,
                SlabsAllocated: _slabsAllocated,
                SlabsFreed: _slabsFreed,
                SlabsFreedByReclaim: Volatile.Read(ref _slabsFreedByReclaim),
                SlabsFreedByShrink: Volatile.Read(ref _slabsFreedByShrink),
                ConstructedFreeObjects: _lifecycle ? total - active : 0,
                PendingRollbackSlabs: _rollbackCount,
                SlabsAwaitingGracePeriod: _rcuWaitingCount,
                Aliases: _aliases.Count);
        }
    }

    public override string ToString() => $"SlabCache '{Name}' ({ObjectSize} B)";
}
