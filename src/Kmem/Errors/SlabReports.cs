namespace Kmem;

/// <summary>What a <see cref="SlabReport"/> is about.</summary>
public enum SlabReportKind
{
    /// <summary>An object came back to its slab while the slab already had it free; the second free was dropped.</summary>
    DoubleFree,
    /// <summary>A slab's free list pointed outside the slab or at an object in use (a write after free); the list was rebuilt from the slab's allocation bitmap.</summary>
    CorruptedFreeList,
    /// <summary>A cache was disposed with live objects: their slabs stay mapped, the rest was freed.</summary>
    Leak,
    /// <summary>A destructor threw while a slab was freed where nobody could be told (Dispose, a deferred free); every object was destructed regardless.</summary>
    DestructorFailed,
    /// <summary>A free that ran later than its call (a deferred or RCU free) was refused.</summary>
    DeferredFreeFailed,
    /// <summary>
    /// A destructor, shrinker or RCU callback Kmem runs on its own thread has not returned
    /// within <see cref="Reclaim.StallBudget"/>: reported once per call, with the time so far
    /// (<see cref="SlabReport.Elapsed"/>). Reclaim goes on for every other cache.
    /// </summary>
    CallbackStall,
}

/// <summary>
/// A problem the allocator found and dealt with where throwing would hit the wrong caller
/// (in a flush of some other thread's objects, in Dispose, on the reclaim thread), as
/// SLUB's <c>slab_err</c>/<c>object_err</c> print and go on.
/// </summary>
/// <param name="Kind">What happened.</param>
/// <param name="CacheName">The cache it happened in (for a <see cref="SlabReportKind.CallbackStall"/>: the cache, the shrinker or the callback).</param>
/// <param name="Address">The object (or the first of them), 0 when there is none.</param>
/// <param name="Message">The report, naming the cache and the address.</param>
/// <param name="Objects">For a leak: the live objects found (at most 16); else the address alone or empty.</param>
/// <param name="Count">How many objects the report covers (a leak's live count).</param>
/// <param name="Elapsed">For a <see cref="SlabReportKind.CallbackStall"/>: how long the call had run when reported; else zero.</param>
public sealed record SlabReport(SlabReportKind Kind, string CacheName, nint Address, string Message, IReadOnlyList<nint> Objects, long Count, TimeSpan Elapsed = default);

/// <summary>
/// Where the allocator's reports go: an event to subscribe to and counters to read.
/// Handlers run on the thread that found the problem, with no allocator lock held; an
/// exception from a handler is swallowed (and counted), never thrown into the allocator.
/// </summary>
public static class SlabReports
{
    private static long s_count;
    /// <summary>Reports per <see cref="SlabReportKind"/>, indexed by its value (bumped in the cold publish path).</summary>
    private static readonly long[] s_countByKind = new long[Enum.GetValues<SlabReportKind>().Length];
    private static long s_handlerFailures;
    private static SlabReport? s_last;

    /// <summary>Raised once per report.</summary>
    public static event Action<SlabReport>? Reported;

    /// <summary>Reports made since the process started.</summary>
    public static long Count => Interlocked.Read(ref s_count);

    /// <summary>Reports of <paramref name="kind"/> made since the process started (0 for a value that is no kind).</summary>
    public static long CountOf(SlabReportKind kind) =>
        (uint)kind < (uint)s_countByKind.Length ? Interlocked.Read(ref s_countByKind[(int)kind]) : 0;

    /// <summary>Handler calls that threw.</summary>
    public static long HandlerFailures => Interlocked.Read(ref s_handlerFailures);

    /// <summary>The latest report, if any.</summary>
    public static SlabReport? Last => Volatile.Read(ref s_last);

    /// <summary>Reports found under a lock, waiting for <see cref="Flush"/> (per thread: raised by the thread that found them).</summary>
    [ThreadStatic] private static List<SlabReport>? t_deferred;

    /// <summary>Publishes now. Caller holds no allocator lock.</summary>
    internal static void Publish(SlabReport report)
    {
        Interlocked.Increment(ref s_count);
        if ((uint)report.Kind < (uint)s_countByKind.Length)
            Interlocked.Increment(ref s_countByKind[(int)report.Kind]);
        Volatile.Write(ref s_last, report);
        Action<SlabReport>? handlers = Reported;
        if (handlers == null)
            return;
        foreach (Action<SlabReport> h in handlers.GetInvocationList().Cast<Action<SlabReport>>())
        {
            try
            {
                h(report);
            }
            catch (Exception)
            {
                Interlocked.Increment(ref s_handlerFailures);
            }
        }
    }

    /// <summary>Keeps a report found under a lock for <see cref="Flush"/>; allocates only when there is one.</summary>
    internal static void Defer(SlabReport report) => (t_deferred ??= []).Add(report);

    /// <summary>True when this thread has reports to flush (one thread-static read).</summary>
    internal static bool HasDeferred => t_deferred is { Count: > 0 };

    /// <summary>Publishes this thread's deferred reports. Caller holds no allocator lock.</summary>
    internal static void Flush()
    {
        List<SlabReport>? list = t_deferred;
        if (list == null || list.Count == 0)
            return;
        SlabReport[] reports = [.. list];
        list.Clear();
        foreach (SlabReport r in reports)
            Publish(r);
    }
}
