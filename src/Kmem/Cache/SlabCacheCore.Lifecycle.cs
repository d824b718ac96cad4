using System.Runtime.ExceptionServices;
using Kmem.Slab;

namespace Kmem;

/// <summary>Shrink, Dispose, the reclaim thread's work on one cache, and statistics.</summary>
internal sealed unsafe partial class SlabCacheCore
{
    /// <summary>
    /// Returns every empty slab to the page layer, after draining the objects parked in
    /// every thread's sheaf (idle and exited threads included) and in the barn; the
    /// destructor runs on their objects, here, on the calling thread. A TypesafeByRcu cache
    /// waits here for a grace period first (so never call it inside a read-side section).
    /// </summary>
    /// <exception cref="ObjectDisposedException">The cache is disposed.</exception>
    /// <exception cref="Exception">The first exception a destructor threw (a bug in it); every slab was freed regardless.</exception>
    internal void Shrink()
    {
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
                TakeGracePeriodSlabs(all: true, ref release);
            }
            failure = FreeSlabsAfterGracePeriod(release, SlabFreedBy.Shrink);
        }
        FlushReports();
        Pages.Trim();
        if (failure != null)
            ExceptionDispatchInfo.Throw(failure);
    }

    /// <summary>
    /// Kills the sheaves, frees every slab without live objects, and leaves the rest
    /// mapped and reported. Strict: with live objects, drains only and returns false.
    /// Reports instead of throwing. Caller holds slab_mutex.
    /// </summary>
    internal bool DestroyCore(bool strict, out IReadOnlyList<nint> liveObjects)
    {
        liveObjects = [];
        long live;
        List<nint> named;
        Exception? failure;
        using (_drainLock.Scope())
        {
            SlabHeader* release = null;
            if (strict)
            {
                DrainSheaves(ref release);
                using (_listLock.Scope())
                {
                    live = _objectsOut;
                    named = live != 0 ? LiveObjects(16) : [];
                }
                if (live != 0)
                {
                    FreeSlabs(release, SlabFreedBy.Shrink, out _);   // what the drain emptied
                    liveObjects = named;
                    return false;
                }
            }
            // From here on every slow path refuses: it tests _disposed first, and again
            // under list_lock where it goes to the lists without a sheaf.
            _disposed = true;
            DrainSheaves(ref release, kill: true);
            using (_listLock.Scope())
            {
                live = _objectsOut;
                named = live != 0 ? LiveObjects(16) : [];
                UnlinkEmpties(keep: 0, long.MaxValue, ref release);
                TakeGracePeriodSlabs(all: true, ref release);
            }
            failure = FreeSlabsAfterGracePeriod(release, SlabFreedBy.Shrink);
        }
        if (failure != null)
        {
            SlabReports.Defer(new SlabReport(SlabReportKind.DestructorFailed, Name, 0,
                $"cache '{Name}': a destructor threw while Dispose freed the slabs (every object was destructed): {failure.GetType().Name}: {failure.Message}", [], 0));
        }
        if (live == 0)
        {
            _barn.Dispose();
            SlabCacheRegistry.RemoveLocked(_index);
        }
        else
        {
            // The slabs of live objects stay mapped and in the page map under this index,
            // so the index is never given to another cache: a later free of a leaked object
            // finds this disposed cache and throws ObjectDisposedException.
            Interlocked.Add(ref _leakedObjects, live);
            string list = string.Join(", ", named.Select(a => $"0x{a:x}"));
            SlabReports.Defer(new SlabReport(SlabReportKind.Leak, Name, named.Count > 0 ? named[0] : 0,
                $"cache '{Name}': disposed with {live} live object(s) ({list}{(live > named.Count ? ", ..." : "")}); their slabs stay mapped, the rest was freed",
                named, live));
        }
        return true;
    }

    /// <summary>
    /// The reclaim thread's work on this cache: empty slabs beyond the reserve and slabs
    /// whose grace period ended (<see cref="ReclaimMode.Excess"/>), or every parked object
    /// and every empty slab (<see cref="ReclaimMode.Trim"/>). Destructor calls are charged
    /// to <paramref name="budget"/>; the outcome's FreedSlabs went back to the page layer in
    /// this call (a TypesafeByRcu slab emptied here only begins its grace period, and counts
    /// when a later pass frees it). sheaf_drain is only tried: when somebody holds it (a
    /// Shrink or Dispose, or a reclaim worker stuck in this cache's destructor) the cache is
    /// skipped, Busy, so one stuck cache never stops reclaim of the others.
    /// </summary>
    internal ReclaimOutcome ReclaimWork(ReclaimMode mode, ref long budget)
    {
        if (mode == ReclaimMode.Excess
            && (!_lifecycle || Volatile.Read(ref _emptyCount) <= _minEmptySlabs)
            && Volatile.Read(ref _rcuWaitingCount) == 0)
            return default;
        if (!_drainLock.TryEnter())
            return new ReclaimOutcome(More: false, FreedSlabs: 0, Failure: null, Busy: true);
        bool more;
        long freedSlabs;
        Exception? failure;
        try
        {
            if (_disposed)
                return default;
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
                UnlinkEmpties(keep, maxSlabs, ref release);
                more = _emptyCount > keep && (_lifecycle || mode == ReclaimMode.Trim);
                TakeGracePeriodSlabs(all: false, ref ripe);
            }
            // Counts the slabs the drain emptied as well: all of them are this pass's work.
            // (In a TypesafeByRcu cache there are none: its emptied slabs went to the
            // waiting list, and cost no destructor until a later pass frees them as ripe.)
            failure = FreeSlabs(release, SlabFreedBy.Reclaim, out freedSlabs);
            if (ripe != null)
            {
                Exception? late = FreeSlabs(ripe, SlabFreedBy.Reclaim, out long freedRipe);
                failure ??= late;
                freedSlabs += freedRipe;
            }
        }
        finally
        {
            _drainLock.Exit();
        }
        FlushReports();
        if (_lifecycle)
            budget -= freedSlabs * _layout.Objects;
        return new ReclaimOutcome(more, freedSlabs, failure, Busy: false);
    }

    /// <summary>
    /// The reclaim thread: the objects in the sheaves of exited threads (<paramref name="deadIds"/>)
    /// go back to their slabs, through the same handshake as any drain (the owners are
    /// dead, but the handshake's process-wide barrier is also what makes their last writes
    /// to the sheaf visible here on every architecture), and the slabs that empties are
    /// freed. False when another drainer holds sheaf_drain: the ids must not be recycled
    /// yet. The barn is left alone: its sheaves are the live threads'. An id whose owner
    /// died inside its sheaf (still busy) is removed from <paramref name="deadIds"/>.
    /// </summary>
    internal bool DrainExitedThreads(HashSet<int> deadIds, out long drained, out Exception? failure)
    {
        drained = 0;
        failure = null;
        if (!_drainLock.TryEnter())
            return false;
        try
        {
            if (_disposed)
                return true;   // Dispose retired every sheaf; recycling the id frees them
            SlabHeader* release = null;
            drained = DrainSheaves(ref release, only: deadIds);
            failure = FreeSlabs(release, SlabFreedBy.Reclaim, out _);
        }
        finally
        {
            _drainLock.Exit();
        }
        FlushReports();
        return true;
    }

    /// <summary>Tests: the objects parked in thread id <paramref name="threadId"/>'s sheaf of this cache.</summary>
    internal int ObjectsInSheafOf(int threadId) => _sheafTable.CountAt(threadId);

    internal long Activity => Volatile.Read(ref _activity);

    /// <summary>The watchdog found one of this cache's destructor calls past the budget.</summary>
    internal void CountDestructorStall() => Interlocked.Increment(ref _destructorStalls);

    /// <summary>Objects still live when the cache was disposed (racy read, no lock: for metrics).</summary>
    internal long LeakedObjects => Volatile.Read(ref _leakedObjects);

    /// <summary>Empty slabs of a TypesafeByRcu cache waiting for their grace period now (racy read).</summary>
    internal long SlabsAwaitingGracePeriod => Volatile.Read(ref _rcuWaitingCount);

    /// <summary>The reclaim thread's idle bookkeeping for this cache (touched by that thread only).</summary>
    internal ReclaimIdleState IdleState { get; } = new();

    /// <summary>A snapshot of the cache's counts (its root's, for an alias); also after Dispose.</summary>
    internal SlabCacheStatistics GetStatistics()
    {
        // barn_lock, then list_lock (the lock order), then the sheaves' counts under
        // sheaf_table (a leaf): every move of parked objects between a sheaf, the barn and
        // the slabs happens inside one of those sections (a drain and a flush zero or cut a
        // sheaf's Count in the list_lock section that returns its objects), so no object is
        // counted both out of the slabs and parked, and active never goes below zero while
        // a drain runs beside this. Only the owners' own pops and pushes move meanwhile.
        using (_barn.Lock.Scope())
        using (_listLock.Scope())
        {
            long cached = _disposed ? 0 : _sheafTable.CachedObjects() + _barn.Objects;
            long active = _objectsOut - cached;
            long total = _slabCount * _layout.Objects;
            return new SlabCacheStatistics(
                ActiveObjects: active,
                TotalObjects: total,
                Slabs: _slabCount,
                BytesHeld: (_slabCount + _rcuWaitingCount) * _layout.SlabSize,
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
                SlabsFreed: Volatile.Read(ref _slabsFreed),
                SlabsFreedByReclaim: Volatile.Read(ref _slabsFreedByReclaim),
                SlabsFreedByShrink: Volatile.Read(ref _slabsFreedByShrink),
                ConstructedFreeObjects: _lifecycle ? total - active : 0,
                SlabsAwaitingGracePeriod: _rcuWaitingCount,
                Aliases: Math.Max(0, _handles.Count - 1),
                DoubleFrees: _doubleFrees,
                FreeListRepairs: _freeListRepairs,
                LeakedObjects: Volatile.Read(ref _leakedObjects),
                DestructorStalls: Volatile.Read(ref _destructorStalls),
                SheafRefills: _sheafRefills,
                SheafFlushes: _sheafFlushes,
                BarnGets: _barn.Gets,
                BarnPuts: _barn.Puts);
        }
    }

    /// <summary>The figures of this cache's locks, in lock order: sheaf_drain, barn_lock, list_lock, sheaf_table.</summary>
    internal IReadOnlyList<Locking.LockStatistics> GetLockStatistics() =>
        [_drainLock.GetStatistics(), _barn.Lock.GetStatistics(), _listLock.GetStatistics(), _sheafTable.Lock.GetStatistics()];

    public override string ToString() => $"SlabCacheCore '{Name}' ({ObjectSize} B)";
}
