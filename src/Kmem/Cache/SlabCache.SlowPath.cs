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
    private readonly Lock _sheafTableLock = new();

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void* AllocSlow(bool throwOnFailure)
    {
        if (_disposed)
            ThrowDisposed(null);
        if (_checked)
            return CheckedAlloc(throwOnFailure);

        Sheaf* s = SheafOfCurrentThread();
        while (true)
        {
            if (!EnterSheaf(s))
                continue;
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
            if (s->Count > 0)
            {
                void* p = Sheaf.Objects(s)[--s->Count];
                Volatile.Write(ref s->Busy, 0);
                return p;
            }
            Volatile.Write(ref s->Busy, 0);

            // Nothing free anywhere: map a new slab, holding no lock and no Busy.
            SlabHeader* slab = NewSlab(out Pages.Refusal refusal);
            if (slab == null)
            {
                if (throwOnFailure)
                    throw new SlabAllocationException(Name, Pages.ToFailure(refusal), (nuint)ObjectSize);
                return null;
            }
            AddNewSlab(slab);
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeSlow(void* obj, SlabHeader* slab)
    {
        if (_disposed)
            ThrowDisposed(obj);
        if (_checked)
        {
            CheckedFree(obj, slab);
            return;
        }

        Sheaf* s = SheafOfCurrentThread();
        SlabHeader* release = null;
        while (!EnterSheaf(s))
        {
        }
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
                    ReturnToSlabs(Sheaf.Objects(s), half, ref release);
                new Span<nint>(Sheaf.Objects(s) + half, s->Count - half).CopyTo(new Span<nint>(Sheaf.Objects(s), s->Count - half));
                s->Count -= half;
            }
        }
        Sheaf.Objects(s)[s->Count++] = obj;
        Volatile.Write(ref s->Busy, 0);
        ReleaseSlabs(release);
    }

    /// <summary>
    /// Owner side of the handshake: sets Busy and returns true if no drain is pending;
    /// else clears Busy, waits for the drainer to finish, and returns false (retry).
    /// </summary>
    private static bool EnterSheaf(Sheaf* s)
    {
        s->Busy = 1;
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
        lock (_sheafTableLock)
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
            return table[id];
        }
    }

    /// <summary>
    /// Drainer side of the handshake: every object parked in any thread's sheaf (idle,
    /// busy or exited) and in the barn goes back to its slab. Caller holds sheaf_drain.
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
