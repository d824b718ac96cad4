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
/// <para>No shared counter on the deferral path (the seed review's objection to a shared
/// cache line): a deferral touches its CPU's own line (the list head and that CPU's
/// count) and reads <see cref="s_work"/>, a <see cref="WorkFlag"/> it writes only when it
/// finds it clear, so the line stays shared and clean between drains. Counts are per CPU,
/// summed when asked. The pusher's CAS on its head is the flag's publication (P1); the
/// drainer takes the heads (C3) after <see cref="WorkFlag.TryBeginConsume"/>.</para>
/// </remarks>
internal static unsafe class DeferredFrees
{
    /// <summary>One 64-byte line per CPU: the list head, the objects pushed on that CPU; and a last line for the counts of drains.</summary>
    private const int Stride = 8;
    private const int HeadField = 0, PushedField = 1, DrainedField = 2;

    /// <summary>Per CPU, at <c>cpu * Stride</c>: the list head and the counts (changed with atomics on that CPU's line).</summary>
    private static readonly long[] s_lines = new long[(CpuTopology.PossibleCpus + 1) * Stride];

    /// <summary>
    /// Objects of ConsistencyChecks caches that could not be checked when queued: kept in
    /// slots, not linked through the object, because an unchecked one may be a double free
    /// whose memory is in use again, and a link written into it would be overwritten.
    /// </summary>
    private static readonly nint[] s_unchecked = new nint[1024];

    /// <summary>Set by a deferral that finds it clear, cleared by a drain before it takes the lists.</summary>
    private static readonly WorkFlag s_work = new();

    private static long s_failures;
    private static Exception? s_lastFailure;
    [ThreadStatic] private static bool t_draining;

    /// <summary>True when a deferred free may be waiting: one read of a line that deferrals rarely write.</summary>
    public static bool MaybePending => s_work.IsSet;

    /// <summary>Objects waiting now (summed over the CPUs, so racy while frees are deferred).</summary>
    public static long Pending => Deferred - Drained;

    /// <summary>Deferrals since start.</summary>
    public static long Deferred => Sum(PushedField);

    /// <summary>Deferred objects freed since start.</summary>
    public static long Drained => Sum(DrainedField);

    /// <summary>Deferred frees that failed when they ran (a double free found late), and the last such error.</summary>
    public static long Failures => Volatile.Read(ref s_failures);

    public static Exception? LastFailure => Volatile.Read(ref s_lastFailure);

    private static long Sum(int field)
    {
        long sum = 0;
        for (int cpu = 0; cpu <= CpuTopology.PossibleCpus; cpu++)
            sum += Volatile.Read(ref s_lines[cpu * Stride + field]);
        return sum;
    }

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
        int line = CpuTopology.CurrentCpu * Stride;
        ref long head = ref s_lines[line + HeadField];
        long old;
        do
        {
            old = Volatile.Read(ref head);
            *link = Encode((nint)old, link);
        }
        while (Interlocked.CompareExchange(ref head, (nint)p, old) != old);   // P1
        Interlocked.Increment(ref s_lines[line + PushedField]);
        s_work.Announce();   // P2, P3
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
                Interlocked.Increment(ref s_lines[CpuTopology.CurrentCpu * Stride + PushedField]);
                s_work.Announce();   // P2, P3
                return true;
            }
        }
        return false;
    }

    /// <summary>
    /// Frees every queued object; from a context that may wait. Not re-entered on one thread.
    /// Returns at once when no work was announced.
    /// </summary>
    public static void Drain()
    {
        if (t_draining || !s_work.TryBeginConsume())   // C1, C2: the takes below see every object whose pusher saw the flag set
            return;
        t_draining = true;
        long drained = 0;
        try
        {
            for (int i = 0; i < s_unchecked.Length; i++)
            {
                if (Volatile.Read(ref s_unchecked[i]) == 0)
                    continue;
                nint p = Interlocked.Exchange(ref s_unchecked[i], 0);
                if (p != 0)
                {
                    FreeOne(p);
                    drained++;
                }
            }
            for (int cpu = 0; cpu < CpuTopology.PossibleCpus; cpu++)
            {
                ref long head = ref s_lines[cpu * Stride + HeadField];
                if (Volatile.Read(ref head) == 0)
                    continue;
                // The list is ours once taken, so it is no longer than what was pending plus
                // the pushes in flight; a longer walk is a cycle, which only two FreeNoLocks
                // of one object racing each other past LooksQueued can make.
                long limit = Pending + 4096;
                var p = (nint)Interlocked.Exchange(ref head, 0);   // C3
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
                    drained++;
                    p = next;
                }
            }
        }
        finally
        {
            // Counted on the drainers' own line, past the CPUs': drains are rare, deferrals are not.
            Interlocked.Add(ref s_lines[CpuTopology.PossibleCpus * Stride + DrainedField], drained);
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
    }

    /// <summary>Counts and reports a deferred free that failed. Called in a drain, which holds no allocator lock.</summary>
    private static void Record(Exception e)
    {
        Interlocked.Increment(ref s_failures);
        Volatile.Write(ref s_lastFailure, e);
        (string cache, nint address) = e switch
        {
            SlabUsageException u => (u.CacheName ?? "kmalloc", u.Address),
            ObjectDisposedException d => (d.ObjectName, (nint)0),
            _ => ("kmalloc", (nint)0),
        };
        SlabReports.Publish(new SlabReport(SlabReportKind.DeferredFreeFailed, cache, address,
            $"a free deferred by FreeNoLock failed when it ran: {e.Message}", address == 0 ? [] : [address], 1));
    }

    /// <summary>The link offset of a queued object: its cache's free-link offset, 0 for a large block.</summary>
    public static int LinkOffsetOf(void* p)
    {
        SlabHeader* h = PageMap.Lookup(p);
        return h != null && h->Kind == BlockKind.Slab ? SlabCacheRegistry.Get(h->CacheIndex).FreeLinkOffset : 0;
    }
}
