using System.Diagnostics;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// SlabFlags.TypesafeByRcu (SLAB_TYPESAFE_BY_RCU, the seed's SLAB_DESTROY_BY_RCU): an
/// object may be reused at once, but an empty slab's memory goes back to the page layer,
/// and its destructor runs, only after a grace period. A reader that found an object's
/// address inside a read-side section therefore always finds an object of this cache
/// there, maybe another identity, never foreign memory.
/// </summary>
/// <remarks>
/// Empty slabs wait on a FIFO list with the <see cref="Rcu.GetState"/> cookie of the
/// moment they were unlinked; each deferral queues an RCU callback that kicks the reclaim
/// thread, which frees the slabs whose grace period has ended. Shrink and Dispose take
/// every waiting slab, wait for one grace period themselves (<see cref="Rcu.Synchronize"/>,
/// holding sheaf_drain, which no reader may take) and free them. The seed's
/// synchronize_kernel() in kmem_cache_destroy is that wait.
/// </remarks>
internal sealed unsafe partial class SlabCacheCore
{
    /// <summary>The callback a deferral queues: a static delegate, so deferring allocates nothing.</summary>
    private static readonly Action s_kickReclaim = Kmem.Reclaim.Kick;

    /// <summary>
    /// Puts an empty slab that was just unlinked (off every list) at the tail of the
    /// waiting list and asks for a reclaim pass after the grace period. Caller holds
    /// list_lock, in the same hold that unlinked the slab: a slab is on a list of the cache
    /// at every instant, so a Dispose that takes list_lock after it finds the slab waiting
    /// (an earlier version deferred after dropping the lock, and a Dispose in between left
    /// the slab on no list it would look at). The cookie is taken under list_lock too, so
    /// cookies never decrease along the list. Never waits: it runs inside Free; the
    /// callback is queued under the rcu_callbacks leaf, which list_lock may hold.
    /// </summary>
    private void WaitForGracePeriodLocked(SlabHeader* slab)
    {
        Debug.Assert(_typesafeByRcu && _listLock.IsHeldByCurrentThread, "not a TypesafeByRcu cache, or list_lock not held");
        slab->RcuCookie = Rcu.GetState();
        slab->Next = null;
        if (_rcuWaitingTail != null)
            _rcuWaitingTail->Next = slab;
        else
            _rcuWaitingHead = slab;
        _rcuWaitingTail = slab;
        _rcuWaitingCount++;
        Rcu.Enqueue(new RcuWork(s_kickReclaim));
    }

    /// <summary>
    /// Moves waiting slabs onto <paramref name="release"/>: those whose grace period has
    /// ended, or all of them (<paramref name="all"/>: the caller then waits for a grace
    /// period before freeing). Caller holds list_lock.
    /// </summary>
    private void TakeGracePeriodSlabs(bool all, ref SlabHeader* release)
    {
        Debug.Assert(_listLock.IsHeldByCurrentThread, "list_lock not held");
        // Cookies never decrease along the list, so the ripe slabs are a prefix.
        while (_rcuWaitingHead != null && (all || Rcu.PollState(_rcuWaitingHead->RcuCookie)))
        {
            SlabHeader* s = _rcuWaitingHead;
            _rcuWaitingHead = s->Next;
            if (_rcuWaitingHead == null)
                _rcuWaitingTail = null;
            _rcuWaitingCount--;
            s->Next = release;
            release = s;
        }
    }

    /// <summary>
    /// Shrink and Dispose: frees <paramref name="release"/> now; in a TypesafeByRcu cache
    /// after one grace period, waited for here (the chain holds slabs unlinked just now).
    /// Caller holds sheaf_drain.
    /// </summary>
    private Exception? FreeSlabsAfterGracePeriod(SlabHeader* release, SlabFreedBy by)
    {
        if (_typesafeByRcu && release != null)
            Rcu.Synchronize();
        return FreeSlabs(release, by, out _);
    }
}
