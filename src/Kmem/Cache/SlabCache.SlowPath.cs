using System.Diagnostics;
using System.Runtime.CompilerServices;
using Kmem.PageLayer;
using Kmem.Sheaves;
using Kmem.Slab;

namespace Kmem;

/// <summary>The slow paths: sheaf refill and flush through the barn and the partial slabs.</summary>
public sealed unsafe partial class SlabCache
{
    private readonly Barn _barn;
    /// <summary>Guards growth of the sheaf table (and the root's alias list); a leaf.</summary>
    private readonly Kmem.Locking.LeafSpinLock _sheafTableLock = new("sheaf_table");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* AllocSlow(bool throwOnFailure)
    {
        if (_disposed)
            ThrowDisposed(null);
        AsNormalContext();
        if (_root != this)
            return _root.AllocSlow(throwOnFailure);
        _activity++;
        if (_lifecycle)
            CheckNotInOwnLifecycle();
        if (_checked)
            return CheckedAlloc(throwOnFailure);

        Sheaf* s = SheafOfCurrentThread();
        bool waited = false;
        while (true)
        {
            if (!EnterSheaf(s))
                continue;
            void* p = RefillAndPop(s);
            Volatile.Write(ref s->Busy, 0);
            if (p != null)
                return p;

            // Nothing free anywhere: map a new slab, holding no lock and no Busy.
            SlabHeader* slab = NewSlab(out AllocationFailure failure, out Exception? thrown);
            if (slab == null)
            {
                if (failure == AllocationFailure.PageLimit && !waited)
                {
                    waited = true;
                    Kmem.Reclaim.WaitForPressurePass();
                    continue;
                }
                return Fail(failure, thrown, throwOnFailure);
            }
            AddNewSlab(slab);
        }
    }

    /// <summary>
    /// Work a slow path does because it may wait, for the paths that may not: frees that
    /// FreeNoLock deferred, and a kick of the reclaim thread to refill the page reserve
    /// AllocNoLock draws on (refilled there, not here: mapping here would spend a fault
    /// injected for this allocation). Two volatile reads when there is none.
    /// </summary>
    private static void AsNormalContext()
    {
        if (DeferredFrees.Pending != 0)   // Drain tests it too; here it saves the call
            DeferredFrees.Drain();
        if (PageReserve.NeedsRefill)
            Kmem.Reclaim.Kick();
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
        if (_root != this)
        {
            _root.FreeSlow(obj, slab);
            return;
        }
        _activity++;
        if (_checked)
        {
            CheckedFree(obj, slab);
            return;
        }

        Sheaf* s = SheafOfCurrentThread();
        SlabHeader* release = null;
        bool excess = false;
        while (!EnterSheaf(s))
        {
        }
        try
        {
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
                        excess = ReturnToSlabs(Sheaf.Objects(s), half, ref release);
                    new Span<nint>(Sheaf.Objects(s) + half, s->Count - half).CopyTo(new Span<nint>(Sheaf.Objects(s), s->Count - half));
                    s->Count -= half;
                }
            }
            Sheaf.Objects(s)[s->Count++] = obj;
        }
        finally
        {
            // Also when the validator refused a lock: a drainer must never wait on a
            // Busy flag its owner left set.
            Volatile.Write(ref s->Busy, 0);
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
        try
        {
            if (s->Count == 0)
            {
                using (_barn.Lock.Scope())
                    _barn.TryTakeFull(s);
            }
            if (s->Count == 0)
            {
                using (_listLock.Scope())
                    s->Count = TakeFromPartial(Sheaf.Objects(s), s->Capacity);
                ReverseObjects(s);
            }
            return s->Count > 0 ? Sheaf.Objects(s)[--s->Count] : null;
        }
        catch
        {
            Volatile.Write(ref s->Busy, 0);
            throw;
        }
    }

    /// <summary>
    /// After objects went back to their slabs in an application's call: frees the slabs of
    /// a cache without destructors at once; for a ctor/dtor cache, wakes the reclaim thread
    /// instead, which alone runs destructors.
    /// </summary>
    private void AfterReturn(SlabHeader* release, bool excess)
    {
        if (release != null)
            ReleaseSlabs(release, SlabFreedBy.Free, out _);
        if (excess)
            Kmem.Reclaim.Kick();
    }

    /// <summary>
    /// Owner side of the handshake: sets Busy and returns true if no drain is pending;
    /// else clears Busy, waits for the drainer to finish, and returns false (retry).
    /// </summary>
    private static bool EnterSheaf(Sheaf* s)
    {
        Volatile.Write(ref s->Busy, 1);   // not sunk below the read that follows
        if (Volatile.Read(ref s->DrainRequested) == 0)
            return true;
        Volatile.Write(ref s->Busy, 0);
        var wait = new SpinWait();
        while (Volatile.Read(ref s->DrainRequested) != 0)
            wait.SpinOnce();
        return false;
    }

    /// <summary>Objects come off a slab in address order; reversed, the sheaf pops them in that order.</summary>
    private static void ReverseObjects(Sheaf* s) => new Span<nint>(Sheaf.Objects(s), s->Count).Reverse();

    /// <summary>This thread's sheaf, created on first use.</summary>
    private Sheaf* SheafOfCurrentThread()
    {
        int id = ThreadSlot.Register();
        Sheaf*[] table = _sheaves;
        if (id < table.Length && table[id] != null)
            return table[id];
        using (_sheafTableLock.Scope())
        {
            if (_disposed)
                ThrowDisposed(null);
            table = _sheaves;
            if (id >= table.Length)
            {
                var grown = new Sheaf*[Math.Max(id + 1, Math.Max(ThreadSlot.MaxId + 1, table.Length * 2))];
                table.CopyTo(grown, 0);
                table = grown;
            }
            if (table[id] == null)
                table[id] = Sheaf.Create(SheafCapacity);
            Volatile.Write(ref _sheaves, table);
            foreach (SlabCache alias in _aliases)
                Volatile.Write(ref alias._sheaves, table);
            return table[id];
        }
    }

    /// <summary>
    /// Drainer side of the handshake: every object parked in any thread's sheaf (idle,
    /// busy or exited) and in the barn goes back to its slab. Caller holds sheaf_drain,
    /// and frees what lands on <paramref name="release"/>.
    /// </summary>
    private void DrainSheaves(ref SlabHeader* release)
    {
        Debug.Assert(_drainLock.IsHeldByCurrentThread, "sheaf_drain not held");
        Sheaf*[] table = Volatile.Read(ref _sheaves);
        foreach (Sheaf* s in table)
        {
            if (s != null)
                Volatile.Write(ref s->DrainRequested, 1);
        }
        // Orders every owner's earlier "Busy = 1" before our reads of Busy below.
        Interlocked.MemoryBarrierProcessWide();
        foreach (Sheaf* s in table)
        {
            if (s == null)
                continue;
            var wait = new SpinWait();
            while (Volatile.Read(ref s->Busy) != 0)
                wait.SpinOnce();
            if (s->Count > 0)
            {
                using (_listLock.Scope())
                    ReturnToSlabs(Sheaf.Objects(s), s->Count, ref release);
                s->Count = 0;
            }
            Volatile.Write(ref s->DrainRequested, 0);
        }
        using (_barn.Lock.Scope())
        {
            void** parked = _barn.Parked(out int count);
            using (_listLock.Scope())
                ReturnToSlabs(parked, count, ref release);
            _barn.Clear();
        }
    }
}
