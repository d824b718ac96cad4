using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Kmem.PageLayer;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// Objects <see cref="Kmalloc.FreeNoLock"/> could not free without waiting: one lock-free
/// list per CPU (as the seed's review preferred to one per cache), pushed with a
/// compare-and-swap, taken whole with an exchange, so there is no pop and no ABA. Drained
/// by later normal slow paths of any cache and by the reclaim thread, which free each
/// object through its cache's one free entry (or a large block through
/// <see cref="LargeBlocks"/>). In the cache layer, below Kmalloc, which only queues.
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
    /// Random per process: a queued object's link word holds <c>next ^ cookie ^ its own
    /// address</c>, so a second FreeNoLock of an object still queued is recognised (the word
    /// decodes to a list link) instead of queuing it twice, which would make the list loop
    /// and hand the object out twice. User data decodes to a valid link with odds of about
    /// 2^-40 (the decoded value must be 0 or an allocator address). The drain clears it.
    /// </summary>
    private static readonly nint s_cookie = (nint)Random.Shared.NextInt64() | 1;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static nint Encode(nint next, nint* link) => next ^ s_cookie ^ (nint)link;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static nint Decode(nint word, nint* link) => word ^ s_cookie ^ (nint)link;

    /// <summary>True when the word at <paramref name="link"/> reads as a deferred-list link: the object is queued already.</summary>
    private static bool LooksQueued(nint* link)
    {
        nint next = Decode(Volatile.Read(ref *link), link);
        return next == 0 || ((next & 7) == 0 && PageMap.Lookup((void*)next) != null);
    }

    /// <summary>
    /// Queues <paramref name="p"/>, whose link lives <paramref name="linkOffset"/> bytes in.
    /// Never waits.
    /// </summary>
    /// <exception cref="SlabUsageException"><paramref name="p"/> is queued already (a double FreeNoLock).</exception>
    public static void Push(void* p, int linkOffset, string owner)
    {
        var link = (nint*)((byte*)p + linkOffset);
        if (LooksQueued(link))
            throw new SlabUsageException(owner, (nint)p, $"{owner}: double free of 0x{(nint)p:x}: FreeNoLock already queued it and it has not been freed yet");
        ref nint head = ref s_heads[CpuTopology.CurrentCpu * Stride];
        nint old;
        do
        {
            old = Volatile.Read(ref head);
            *link = Encode(old, link);
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
                    FreeOne(p);
            }
            for (int cpu = 0; cpu < CpuTopology.PossibleCpus; cpu++)
            {
                if (Volatile.Read(ref s_heads[cpu * Stride]) == 0)
                    continue;
                // The list is ours once taken, so it is no longer than what was pending plus
                // the pushes in flight; a longer walk is a cycle, which only two FreeNoLocks
                // of one object racing each other past LooksQueued can make.
                long limit = Volatile.Read(ref s_pending) + 4096;
                nint p = Interlocked.Exchange(ref s_heads[cpu * Stride], 0);
                for (long walked = 0; p != 0; walked++)
                {
                    if (walked > limit)
                    {
                        Record(new SlabUsageException(null, p, $"kmalloc: the deferred-free list of CPU {cpu} loops at 0x{p:x}: an object was passed to FreeNoLock twice; the rest of that list is dropped"));
                        break;
                    }
                    var link = (nint*)((byte*)p + LinkOffsetOf((void*)p));
                    nint next = Decode(*link, link);
                    *link = 0;   // no longer queued: a later FreeNoLock of it is legitimate
                    FreeOne(p);
                    p = next;
                }
            }
        }
        finally
        {
            t_draining = false;
        }
    }

    /// <summary>Frees through the object's cache's one free entry, or the large-block path.</summary>
    private static void FreeOne(nint p)
    {
        try
        {
            SlabHeader* h = PageMap.Lookup((void*)p);
            if (h != null && h->Kind == BlockKind.Slab)
                SlabCacheRegistry.Get(h->CacheIndex).FreeObject((void*)p, h);
            else
                LargeBlocks.Free((void*)p, h);
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
