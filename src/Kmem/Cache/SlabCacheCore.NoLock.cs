using System.Diagnostics;
using Kmem.PageLayer;
using Kmem.Sheaves;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// The never-waiting paths behind <see cref="Kmalloc.AllocNoLock(nuint, KmallocFlags)"/> and
/// <see cref="Kmalloc.FreeNoLock"/> (seed 003). They must not: wait for or spin on a lock,
/// wait for the reclaim thread, call a constructor, allocate managed or native memory, or
/// call into the OS.
/// </summary>
/// <remarks>
/// The thread's sheaf is the kernel's per-CPU kmem_cache_cpu, and its Busy flag is
/// local_lock_is_locked(): a sheaf is only ever Busy for its own thread, so finding it Busy
/// means this call re-entered the allocator from inside this bucket (from a lock hook, a
/// destructor, an exception filter...), and the bucket's state is half changed under us.
/// Then the caller tries the next bucket. A lock this thread already holds counts as busy
/// for the same reason; any other lock is only try-locked.
/// </remarks>
internal sealed unsafe partial class SlabCacheCore
{
    /// <summary>
    /// One object without waiting, or null; <paramref name="busy"/> says this thread is
    /// inside this cache already (retry elsewhere). Only for caches with no constructor,
    /// no accounting, no debug checks (the kmalloc caches).
    /// </summary>
    internal void* TryAllocNoLock(out bool busy)
    {
        Debug.Assert(!_lifecycle && !_checked, "AllocNoLock is for caches without constructors or checks");
        busy = ThreadSheafIsBusy();
        if (busy)
            return null;
        void* p = TryAllocFast();
        if (p != null)
            return p;
        if (_listLock.IsHeldByCurrentThread || _barn.Lock.IsHeldByCurrentThread)
        {
            busy = true;
            return null;
        }
        return TakeOneNoLock();
    }

    /// <summary>
    /// One object from a partial slab, else from a slab made of a reserve block, under one
    /// try-locked hold of list_lock (formatting a slab takes no lock and allocates nothing).
    /// </summary>
    private void* TakeOneNoLock()
    {
        void* p = null;
        if (!_listLock.TryEnterNeverWaiting())
            return null;
        try
        {
            if (TakeFromPartial(&p, 1) == 0 && !_randomize && !_disposed)
            {
                byte* block = PageReserve.TryTake(_layout.SlabSize);
                if (block != null)
                {
                    LinkNewSlab(FormatSlab(block, zeroed: false));
                    TakeFromPartial(&p, 1);
                }
            }
        }
        finally
        {
            _listLock.Exit();
        }
        return p;
    }

    /// <summary>
    /// Frees <paramref name="obj"/> (checked to be an object start of <paramref name="slab"/>)
    /// into this thread's sheaf if that needs no wait; false when it must be deferred.
    /// </summary>
    internal bool TryFreeNoLock(void* obj, SlabHeader* slab)
    {
        CheckObjectStart(obj, slab);
        if (_checked || _disposed || ThreadSheafIsBusy())
            return false;
        // The free entry's hooks never wait: Account's uncharge is atomics on the group's
        // counters and a CAS on a per-CPU stock word.
        if (_hooks != 0)
            BeforeFree(obj);
        return TryFreeFast(obj);
    }

    /// <summary>
    /// The accounted caches' allocation hook for the never-waiting path: charges the
    /// current group (a CAS on its per-CPU stock, else atomics on its counters; neither
    /// waits) and returns <paramref name="obj"/>; over a limit, gives the object back
    /// without waiting (this thread's sheaf, else the deferred list) and returns null, with
    /// nothing charged.
    /// </summary>
    internal void* ChargeNoLock(void* obj)
    {
        Debug.Assert(_account, "not an accounted cache");
        int* id = (int*)((byte*)obj + _groupOffset);
        MemoryGroup? group = MemoryGroup.Current;
        *id = 0;
        if (group == null || group == MemoryGroup.Root)
            return obj;
        if (group.TryCharge(_layout.Stride))
        {
            *id = group.Online().Id;
            return obj;
        }
        if (ThreadSheafIsBusy() || !TryFreeFast(obj))
            DeferredFrees.Push(obj, _layout.FreeLinkOffset, Name);
        return null;
    }

    /// <summary>This thread is inside this cache already (<see cref="SheafFastPath.IsBusy"/>).</summary>
    private bool ThreadSheafIsBusy() => SheafFastPath.IsBusy(_sheaves);

    /// <summary>
    /// ConsistencyChecks caches, before their object is deferred: if list_lock can be had
    /// without waiting, a double free throws now (the object's bitmap bit is clear).
    /// Returns true when checked; false when the lock was busy (then the object must not be
    /// linked through its memory, which may be in a free list: see DeferredFrees).
    /// </summary>
    internal bool TryPrecheckFree(void* obj, SlabHeader* slab)
    {
        if (_listLock.IsHeldByCurrentThread || !_listLock.TryEnterNeverWaiting())
            return false;
        bool free;
        try
        {
            int index = ObjectIndex(slab, obj);
            free = (BitmapOf(slab)[index >> 6] & (1UL << index)) == 0;
        }
        finally
        {
            _listLock.Exit();
        }
        if (free)
            ThrowDoubleFree(obj, "it is already free");
        return true;
    }

    internal bool IsChecked => _checked;

    /// <summary>True for a SlabFlags.Account cache (its objects are charged to a memory group).</summary>
    internal bool IsAccounted => _account;

    /// <summary>Where an object of this cache can carry the deferred-free link without touching its constructed bytes.</summary>
    internal int FreeLinkOffset => _layout.FreeLinkOffset;
}
