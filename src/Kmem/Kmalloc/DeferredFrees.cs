using System.Runtime.InteropServices;
using Kmem.PageLayer;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// Objects <see cref="Kmalloc.FreeNoLock"/> could not free without waiting: one lock-free
/// list per CPU (as the seed's review preferred to one per cache), pushed with a
/// compare-and-swap, taken whole with an exchange, so there is no pop and no ABA. Drained
/// by later normal slow paths of any cache and by the reclaim thread, which free each
/// object with <see cref="Kmalloc.Free"/>.
/// </summary>
/// <remarks>
/// The link is written where the object's cache keeps its free-list link (after the
/// object in a ctor/dtor cache, so its constructed bytes stay), or in the first word of a
/// large block. The object's slab cannot go away meanwhile: it still counts as in use.
/// </remarks>
internal static unsafe class DeferredFrees
{
    private const int Stride = 8;   // one 64-byte line per CPU's head

    private static readonly nint[] s_heads = new nint[CpuTopology.PossibleCpus * Stride];

    /// <summary>
    /// Objects of ConsistencyChecks caches that could not be checked when queued: kept in
    /// slots, not linked through the object, because an unchecked one may be a double free
    /// whose memory is in use again, and a link written into it would be overwritten.
    /// </summary>
    private static readonly nint[] s_unchecked = new nint[1024];
    private static long s_pending;
    private static long s_deferred;
    private static long s_drained;
    private static long s_failures;
    private static Exception? s_lastFailure;
    [ThreadStatic] private static bool t_draining;

    /// <summary>Objects waiting now.</summary>
    public static long Pending => Volatile.Read(ref s_pending);

    public static long Deferred => Volatile.Read(ref s_deferred);

    public static long Drained => Volatile.Read(ref s_drained);

    /// <summary>Deferred frees that failed when they ran (a double free found late), and the last such error.</summary>
    public static long Failures => Volatile.Read(ref s_failures);

    public static Exception? LastFailure => Volatile.Read(ref s_lastFailure);

    /// <summary>
    /// Queues <paramref name="p"/>, whose link lives <paramref name="linkOffset"/> bytes in;
    /// <paramref name="prechecked"/> (bit 0 of the link, free in an aligned pointer) says a
    /// checked cache has already marked it free. Never waits.
    /// </summary>
    public static void Push(void* p, int linkOffset, bool prechecked)
    {
        ref nint head = ref s_heads[CpuTopology.CurrentCpu * Stride];
        var link = (nint*)((byte*)p + linkOffset);
        nint old;
        do
        {
            old = Volatile.Read(ref head);
            *link = old | (prechecked ? 1 : 0);
        }
        while (Interlocked.CompareExchange(ref head, (nint)p, old) != old);
        Interlocked.Increment(ref s_pending);
        Interlocked.Increment(ref s_deferred);
    }

    /// <summary>
    /// Queues an object of a ConsistencyChecks cache that could not be checked now, in a
    /// slot of its own; false when every slot is taken (then it is linked as the others).
    /// </summary>
    public static bool TryPushUnchecked(void* p)
    {
        int start = CpuTopology.CurrentCpu * 64 % s_unchecked.Length;
        for (int i = 0; i < s_unchecked.Length; i++)
        {
            ref nint slot = ref s_unchecked[(start + i) % s_unchecked.Length];
            if (Volatile.Read(ref slot) == 0 && Interlocked.CompareExchange(ref slot, (nint)p, 0) == 0)
            {
                Interlocked.Increment(ref s_pending);
                Interlocked.Increment(ref s_deferred);
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// Frees every queued object; from a context that may wait. Not re-entered on one thread.
    /// Returns at once when nothing is pending (a push still between its CAS and its count
    /// waits for the next drain).
    /// </summary>
    public static void Drain()
    {
        if (t_draining || Volatile.Read(ref s_pending) == 0)
            return;
        t_draining = true;
        try
        {
            for (int i = 0; i < s_unchecked.Length; i++)
            {
                if (Volatile.Read(ref s_unchecked[i]) == 0)
                    continue;
                nint p = Interlocked.Exchange(ref s_unchecked[i], 0);
                if (p != 0)
                    FreeOne(p, prechecked: false);
            }
            for (int cpu = 0; cpu < CpuTopology.PossibleCpus; cpu++)
            {
                if (Volatile.Read(ref s_heads[cpu * Stride]) == 0)
                    continue;
                // The list is ours once taken, so it is no longer than what was pending plus
                // the pushes in flight; a longer walk is a cycle, which only the same object
                // queued twice (a double free the checks could not see) makes.
                long limit = Volatile.Read(ref s_pending) + 4096;
                nint p = Interlocked.Exchange(ref s_heads[cpu * Stride], 0);
                for (long walked = 0; p != 0; walked++)
                {
                    if (walked > limit)
                    {
                        Record(new SlabUsageException(null, p, $"kmalloc: the deferred-free list of CPU {cpu} loops at 0x{p:x}: an object was passed to FreeNoLock twice; the rest of that list is dropped"));
                        break;
                    }
                    nint link = *(nint*)((byte*)p + LinkOffsetOf((void*)p));
                    FreeOne(p, prechecked: (link & 1) != 0);
                    p = link & ~(nint)1;
                }
            }
        }
        finally
        {
            t_draining = false;
        }
    }

    private static void FreeOne(nint p, bool prechecked)
    {
        try
        {
            if (prechecked)
                SlabCacheRegistry.Get(PageMap.Lookup((void*)p)->CacheIndex).FreePrechecked((void*)p);
            else
                Kmalloc.Free((void*)p);
        }
        catch (Exception e)
        {
            // A double free of a checked cache shows only now, in somebody else's call:
            // recorded, not thrown at them.
            Record(e);
        }
        Interlocked.Decrement(ref s_pending);
        Interlocked.Increment(ref s_drained);
    }

    private static void Record(Exception e)
    {
        Interlocked.Increment(ref s_failures);
        Volatile.Write(ref s_lastFailure, e);
    }

    /// <summary>The link offset of a queued object: its cache's free-link offset, 0 for a large block.</summary>
    public static int LinkOffsetOf(void* p)
    {
        SlabHeader* h = PageMap.Lookup(p);
        return h != null && h->Kind == BlockKind.Slab ? SlabCacheRegistry.Get(h->CacheIndex).FreeLinkOffset : 0;
    }
}
