using System.Runtime.CompilerServices;
using Kmem.PageLayer;
using Kmem.Sheaves;
using Kmem.Slab;

namespace Kmem;

/// <summary>The slow paths: sheaf refill and flush through the barn and the partial slabs.</summary>
internal sealed unsafe partial class SlabCacheCore
{
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* AllocSlow(bool throwOnFailure)
    {
        if (_disposed)
            ThrowDisposed(null);
        AsNormalContext();
        _activity++;
        if (_lifecycle)
            CheckNotInOwnLifecycle();
        if (_checked)
            return CheckedAlloc(throwOnFailure);

        bool waited = false;
        while (true)
        {
            // Fetched anew each round: between rounds this thread ran outside code (report
            // handlers, a constructor, the wait for reclaim), where a slow path of another
            // cache may have freed this sheaf if a Dispose retired it meanwhile.
            Sheaf* s = _sheafTable.OfCurrentThread();
            if (s == null || !Sheaf.EnterWaiting(s))
                ThrowDisposed(null);
            void* p;
            try
            {
                p = RefillAndPop(s);
            }
            finally
            {
                // Also when the validator refused a lock: a drainer must never wait on a
                // Busy flag its owner left set.
                Sheaf.Exit(s);
                FlushReports();
            }
            if (p != null)
                return p;
            // Nothing free anywhere: map a new slab, holding no lock and no Busy.
            if (!Grow(ref waited, throwOnFailure, out void* failed))
                return failed;
        }
    }

    /// <summary>
    /// Maps, constructs and publishes a new slab, for an allocation that found nothing
    /// free. At the page limit the first time, waits (bounded) for a reclaim pass instead,
    /// and the caller retries. False when the allocation fails, with its result (null, or
    /// a throw) already made by <see cref="Fail"/> in <paramref name="failed"/>.
    /// </summary>
    private bool Grow(ref bool waited, bool throwOnFailure, out void* failed)
    {
        failed = null;
        SlabHeader* slab = NewSlab(out AllocationFailure failure, out Exception? thrown);
        if (slab != null)
        {
            AddNewSlab(slab);
            return true;
        }
        if (failure == AllocationFailure.PageLimit && !waited)
        {
            waited = true;
            Kmem.Reclaim.WaitForPressurePass();
            return true;
        }
        failed = Fail(failure, thrown, throwOnFailure);
        return false;
    }

    /// <summary>
    /// Work a slow path does because it may wait, for the paths that may not: frees that
    /// FreeNoLock deferred, and a kick of the reclaim thread to refill the page reserve
    /// AllocNoLock draws on (refilled there, not here: mapping here would spend a fault
    /// injected for this allocation). Two volatile reads of rarely written lines when there is none.
    /// </summary>
    private static void AsNormalContext()
    {
        if (DeferredFrees.MaybePending)   // Drain tests it too; here it saves the call
            DeferredFrees.Drain();
        if (PageReserve.NeedsRefill)
            Kmem.Reclaim.Kick();
    }

    /// <summary>Publishes what this thread found under a lock (double frees, repaired free lists). No lock may be held.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void FlushReports()
    {
        if (SlabReports.HasDeferred)
            SlabReports.Flush();
    }

    /// <summary>The end of a failed allocation: the constructor's exception, the reason, or null.</summary>
    private void* Fail(AllocationFailure failure, Exception? thrown, bool throwOnFailure)
    {
        if (thrown != null)
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Throw(thrown);
        if (throwOnFailure)
            throw new SlabAllocationException(Name, failure, (nuint)ObjectSize);
        return null;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeSlow(void* obj, SlabHeader* slab)
    {
        if (_disposed)
            ThrowDisposed(obj);
        AsNormalContext();
        _activity++;
        if (_checked)
        {
            CheckedFree(obj, slab);
            return;
        }

        Sheaf* s = _sheafTable.OfCurrentThread();
        if (s == null || !Sheaf.EnterWaiting(s))
            ThrowDisposed(obj);
        SlabHeader* release = null;
        bool excess = false;
        try
        {
            if (s->Count > 0 && Sheaf.Objects(s)[s->Count - 1] == obj)
                ThrowDoubleFree(obj, "it is the object this thread freed last");
            if (s->Count == s->Capacity)
            {
                bool parked;
                using (_barn.Lock.Scope())
                    parked = _barn.TryPutFull(s);
                if (!parked)
                {
                    // Barn full: the older half goes back to the slabs, the warmer half stays.
                    int half = s->Count / 2;
                    using (_listLock.Scope())
                    {
                        excess = ReturnToSlabs(Sheaf.Objects(s), half, ref release);
                        _sheafFlushes++;
                        s->Count -= half;   // with the slabs' counts, for GetStatistics; the objects move below
                    }
                    new Span<nint>(Sheaf.Objects(s) + half, s->Count).CopyTo(new Span<nint>(Sheaf.Objects(s), s->Count));
                }
            }
            Sheaf.Objects(s)[s->Count++] = obj;
        }
        finally
        {
            Sheaf.Exit(s);
        }
        AfterReturn(release, excess);
    }

    /// <summary>
    /// With Busy set: refills an empty sheaf from the barn, else from partial slabs, and
    /// pops one object; null when neither had any. Busy is the caller's to clear, on every
    /// exit (the validator may refuse a lock here).
    /// </summary>
    private void* RefillAndPop(Sheaf* s)
    {
        if (s->Count == 0)
        {
            using (_barn.Lock.Scope())
                _barn.TryTakeFull(s);
        }
        if (s->Count == 0)
        {
            using (_listLock.Scope())
            {
                s->Count = TakeFromPartial(Sheaf.Objects(s), s->Capacity);
                if (s->Count > 0)
                    _sheafRefills++;
            }
            ReverseObjects(s);
        }
        return s->Count > 0 ? Sheaf.Objects(s)[--s->Count] : null;
    }

    /// <summary>
    /// After objects went back to their slabs in an application's call: frees the slabs of
    /// a cache without destructors at once; for a ctor/dtor cache, wakes the reclaim thread
    /// instead, which alone runs destructors. Then the reports found under the lock.
    /// </summary>
    private void AfterReturn(SlabHeader* release, bool excess)
    {
        if (release != null)
            FreeSlabs(release, SlabFreedBy.Free, out _);
        if (excess)
            Kmem.Reclaim.Kick();
        FlushReports();
    }

    /// <summary>Objects come off a slab in address order; reversed, the sheaf pops them in that order.</summary>
    private static void ReverseObjects(Sheaf* s) => new Span<nint>(Sheaf.Objects(s), s->Count).Reverse();

    /// <summary>
    /// Drainer side of the handshake: every object parked in any thread's sheaf (idle,
    /// busy or exited) and in the barn goes back to its slab. With <paramref name="kill"/>
    /// (Dispose) the sheaves are left dead and retired instead of handed back. Caller
    /// holds sheaf_drain, and frees what lands on <paramref name="release"/>.
    /// </summary>
    /// <param name="release">Slabs the drain empties, for the caller to free.</param>
    /// <param name="kill">Dispose: leave the sheaves dead and retire them.</param>
    /// <param name="only">Exited threads' ids: drain only their sheaves, and leave the barn (the live threads' full sheaves) alone. An id whose sheaf is still busy is removed from it.</param>
    /// <returns>Objects taken from the sheaves (not counting the barn's).</returns>
    private long DrainSheaves(ref SlabHeader* release, bool kill = false, HashSet<int>? only = null)
    {
        long drained = 0;
        System.Diagnostics.Debug.Assert(_drainLock.IsHeldByCurrentThread, "sheaf_drain not held");
        List<(int Id, nint Sheaf)> asked = _sheafTable.BeginDrain(kill, only);
        int handled = 0;
        try
        {
            for (; handled < asked.Count; handled++)
            {
                (int id, nint sheaf) = asked[handled];
                var s = (Sheaf*)sheaf;
                if (only != null && Volatile.Read(ref s->Busy) != 0)
                {
                    // Busy after D2 with an exited owner: either the finalizer recycled the
                    // id since DeadIds and a new, live owner is inside, or the owner died
                    // inside its fast path without unwinding (a native thread exit from a
                    // callback; the fast paths call nothing, so managed code cannot). Nothing
                    // is taken: the request is withdrawn (State back to Open, Count
                    // untouched, as if never asked), so a live owner goes on, and the id is
                    // not recycled by this pass.
                    Volatile.Write(ref s->State, Sheaf.StateOpen);
                    only.Remove(id);
                    continue;
                }
                SheafTable.WaitIdle(s);
                if (s->Count > 0)
                {
                    drained += s->Count;
                    // Count drops under list_lock with the slabs' counts, so GetStatistics
                    // (which reads both under it) never counts these objects twice.
                    using (_listLock.Scope())
                    {
                        ReturnToSlabs(Sheaf.Objects(s), s->Count, ref release);
                        s->Count = 0;
                    }
                }
                if (!kill)
                    SheafTable.EndDrain(s);
            }
        }
        finally
        {
            // A throw (the validator or a lock hook refusing list_lock, no memory for a
            // report) must not leave the sheaves not reached asking their owners to wait
            // for a drain that is over: they go back to Open with their objects. The one
            // being drained when it threw (its owner idle: WaitIdle never throws) may have
            // given part of its objects back already, so it is reopened empty: what it
            // still held is lost to a leak report, never handed out twice. Dead stays Dead.
            if (!kill && handled < asked.Count)
            {
                var current = (Sheaf*)asked[handled].Sheaf;
                current->Count = 0;
                Volatile.Write(ref current->State, Sheaf.StateOpen);
                for (int i = handled + 1; i < asked.Count; i++)
                    Volatile.Write(ref ((Sheaf*)asked[i].Sheaf)->State, Sheaf.StateOpen);
            }
        }
        if (kill)
            _sheafTable.Kill(asked);
        if (only != null)
            return drained;
        using (_barn.Lock.Scope())
        {
            void** parked = _barn.Parked(out int count);
            using (_listLock.Scope())
            {
                ReturnToSlabs(parked, count, ref release);
                _barn.Clear();   // under list_lock, as a sheaf's Count is (GetStatistics)
            }
        }
        return drained;
    }
}
