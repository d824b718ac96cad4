using System.Diagnostics.Metrics;
using Kmem.Locking;
using Kmem.Slab;

namespace Kmem.Diagnostics;

/// <summary>
/// The <c>Kmem</c> <see cref="Meter"/>: what <c>dotnet-counters monitor --counters Kmem</c>
/// and OpenTelemetry's <c>AddMeter("Kmem")</c> see. Instruments are all observable, so the
/// allocator pays nothing until a listener observes: every value is read from the
/// statistics Kmem keeps anyway, on the listener's thread, when it asks.
/// </summary>
/// <remarks>
/// <para><b>Activation.</b> The first cache registered in the process (every
/// <see cref="SlabCache"/>, and the kmalloc caches, go through
/// <see cref="SlabCacheRegistry.AddLocked"/>) or the first per-CPU allocator calls
/// <see cref="Activate"/>, which queues the meter's creation on the thread pool once. Not
/// inline: the caller holds slab_mutex, and publishing an instrument runs every listener's
/// <see cref="MeterListener.InstrumentPublished"/> on the publishing thread, user code that
/// could create a cache (slab_mutex again) or block. On the pool it runs holding no Kmem lock.</para>
/// <para><b>Locks taken by observation</b>, always with no other Kmem lock held by this code:
/// per cache, <c>sheaf_table</c> (a leaf, to sum the sheaves) and then <c>list_lock</c>
/// (<see cref="SlabCacheCore.GetStatistics"/>); per per-CPU allocator, <c>pcpu_lock</c> (a
/// leaf); the lock registry's and nothing else's monitor for lock classes. Neither
/// list_lock nor the leaves is ever held across user code (destructors run under
/// sheaf_drain, constructors under none), so observation never waits for a constructor, a
/// destructor or a shrinker. It takes neither slab_mutex nor sheaf_drain, which Dispose
/// holds while destructors run: caches are found without the registry's lock
/// (<see cref="SlabCacheRegistry.SnapshotUnlocked"/>), groups and allocators from their
/// copy-on-write arrays. Inside a destructor (a leaf-only region, where list_lock may not be
/// taken) the per-cache instruments report nothing.</para>
/// <para><b>Dispose.</b> Each observation walks the registry afresh and keeps nothing: a
/// cache disposed before it is not reported, one disposed during it at most once more. No
/// reference to a cache outlives the callback. A callback never throws: a cache whose read
/// fails is left out of that observation.</para>
/// <para><b>Merged caches</b> are one cache: measurements are per core, tagged with the
/// name of the handle that created it (<see cref="SlabCache.MergedInto"/> names it for an
/// alias), so nothing is counted twice.</para>
/// </remarks>
internal static class KmemMetrics
{
    /// <summary>
    /// The meter's version: the package version (the informational version without its
    /// "+commit" suffix, e.g. 0.1.0-alpha.0.94), not the assembly version, which MinVer
    /// keeps at major.0.0.0 and so says nothing.
    /// </summary>
    internal static string? PackageVersion
    {
        get
        {
            string? v = typeof(KmemMetrics).Assembly
                .GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
                .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion;
            int plus = v?.IndexOf('+', StringComparison.Ordinal) ?? -1;
            return plus >= 0 ? v![..plus] : v ?? typeof(KmemMetrics).Assembly.GetName().Version?.ToString();
        }
    }

    /// <summary>The meter's name (what <c>--counters</c> and <c>AddMeter</c> are given).</summary>
    public const string MeterName = "Kmem";

    private const string CacheName = "kmem.cache.name";

    private static int s_activated;
    private static Meter? s_meter;
    private static Exception? s_creationFailure;

    /// <summary>Tag values of <see cref="SlabReportKind"/>, by value: snake case, as OpenTelemetry attribute values are.</summary>
    private static readonly string[] s_reportKinds =
        [.. Enum.GetValues<SlabReportKind>().Select(k => ToSnakeCase(k.ToString()))];

    /// <summary>The meter, once created (null before, or if its creation failed: <see cref="CreationFailure"/>).</summary>
    internal static Meter? Meter => Volatile.Read(ref s_meter);

    /// <summary>Why the meter could not be created, if it could not (metrics are never worth failing for).</summary>
    internal static Exception? CreationFailure => Volatile.Read(ref s_creationFailure);

    /// <summary>
    /// Makes sure the meter will exist: the first call queues its creation on the thread
    /// pool, later calls cost a volatile read. Safe under any lock (it only queues).
    /// </summary>
    internal static void Activate()
    {
        if (Volatile.Read(ref s_activated) != 0 || Interlocked.Exchange(ref s_activated, 1) != 0)
            return;
        ThreadPool.UnsafeQueueUserWorkItem(static _ => Create(), null);
    }

    private static void Create()
    {
        Meter? meter = null;
        try
        {
            // The meter lives as long as the process (s_meter keeps it, nothing disposes it):
            // its instruments are observed until exit. Only a failed creation disposes it.
#pragma warning disable CA2000
            meter = new Meter(MeterName, PackageVersion);
#pragma warning restore CA2000
            AddCacheInstruments(meter);
            AddPageInstruments(meter);
            AddReclaimInstruments(meter);
            AddRcuInstruments(meter);
            AddLockInstruments(meter);
            AddPerCpuInstruments(meter);
            AddMemoryGroupInstruments(meter);
            AddReportInstruments(meter);
            Volatile.Write(ref s_meter, meter);
        }
        catch (Exception e)
        {
            // On the thread pool an exception would end the process; metrics are not worth that.
            meter?.Dispose();
            Volatile.Write(ref s_creationFailure, e);
        }
    }

    // ---- Caches ----

    /// <summary>Adds a cache's measurements of one instrument to the list.</summary>
    private delegate void CacheEmit(List<Measurement<long>> into, SlabCacheCore cache, in SlabCacheStatistics s, KeyValuePair<string, object?> name);

    private static void AddCacheInstruments(Meter m)
    {
        m.CreateObservableUpDownCounter("kmem.cache.objects.active",
            () => ObserveCaches((l, c, in s, n) => l.Add(new(s.ActiveObjects, n))),
            "{object}", "Objects allocated to users now (parked in sheaves and the barn not included).");
        m.CreateObservableUpDownCounter("kmem.cache.objects.total",
            () => ObserveCaches((l, c, in s, n) => l.Add(new(s.TotalObjects, n))),
            "{object}", "Object slots in the cache's slabs.");
        m.CreateObservableUpDownCounter("kmem.cache.objects.cached",
            () => ObserveCaches((l, c, in s, n) => l.Add(new(s.CachedObjects, n))),
            "{object}", "Free objects parked in per-thread sheaves and the barn.");
        m.CreateObservableUpDownCounter("kmem.cache.slabs",
            () => ObserveCaches(static (l, c, in s, n) =>
            {
                // One list_lock snapshot: the states partition the slabs held.
                l.Add(new(s.Slabs - s.PartialSlabs, n, SlabState("full")));
                l.Add(new(s.PartialSlabs - s.EmptySlabs, n, SlabState("partial")));
                l.Add(new(s.EmptySlabs, n, SlabState("empty")));
                l.Add(new(s.SlabsAwaitingGracePeriod, n, SlabState("grace_period")));
            }),
            "{slab}", "Slabs held, by kmem.slab.state: full, partial, empty (kept for reuse), grace_period (TypesafeByRcu: emptied, waiting for an RCU grace period).");
        m.CreateObservableUpDownCounter("kmem.cache.memory.held",
            () => ObserveCaches((l, c, in s, n) => l.Add(new(s.BytesHeld, n))),
            "By", "Bytes of slab memory the cache holds, slabs waiting for a grace period included.");
        m.CreateObservableCounter("kmem.cache.slab.allocations",
            () => ObserveCaches((l, c, in s, n) => l.Add(new(s.SlabsAllocated, n))),
            "{slab}", "Slabs taken from the page layer.");
        m.CreateObservableCounter("kmem.cache.slab.frees",
            () => ObserveCaches((l, c, in s, n) => l.Add(new(s.SlabsFreed, n))),
            "{slab}", "Slabs given back to the page layer (by a free, reclaim, Shrink or Dispose).");
        m.CreateObservableCounter("kmem.cache.sheaf.refills",
            () => ObserveCaches(static (l, c, in s, n) =>
            {
                l.Add(new(s.BarnGets, n, new("kmem.sheaf.source", "barn")));
                l.Add(new(s.SheafRefills, n, new("kmem.sheaf.source", "slabs")));
            }),
            "{sheaf}", "Empty per-thread sheaves refilled in the allocation slow path, by kmem.sheaf.source: barn (a full sheaf) or slabs (the partial slabs, under list_lock).");
        m.CreateObservableCounter("kmem.cache.sheaf.flushes",
            () => ObserveCaches(static (l, c, in s, n) =>
            {
                l.Add(new(s.BarnPuts, n, new("kmem.sheaf.target", "barn")));
                l.Add(new(s.SheafFlushes, n, new("kmem.sheaf.target", "slabs")));
            }),
            "{sheaf}", "Full per-thread sheaves emptied in the free slow path, by kmem.sheaf.target: barn (left whole) or slabs (the older half, the barn being full). Drains by Shrink, Dispose and reclaim are not counted.");
        m.CreateObservableCounter("kmem.cache.constructor.calls",
            () => ObserveCaches(static (l, c, in s, n) => { if (c.HasLifecycle) l.Add(new(s.ConstructorCalls, n)); }),
            "{call}", "Constructor calls, failed ones included (caches with a constructor or destructor only).");
        m.CreateObservableCounter("kmem.cache.constructor.failures",
            () => ObserveCaches(static (l, c, in s, n) => { if (c.HasLifecycle) l.Add(new(s.ConstructorFailures, n)); }),
            "{call}", "Constructor calls that returned false or threw; each failed one allocation and was rolled back.");
        m.CreateObservableCounter("kmem.cache.destructor.calls",
            () => ObserveCaches(static (l, c, in s, n) => { if (c.HasLifecycle) l.Add(new(s.DestructorCalls, n)); }),
            "{call}", "Objects destructed (caches with a constructor or destructor only).");
        m.CreateObservableCounter("kmem.cache.destructor.stalls",
            () => ObserveCaches(static (l, c, in s, n) => { if (c.HasLifecycle) l.Add(new(s.DestructorStalls, n)); }),
            "{call}", "Destructor calls on a reclaim worker that ran past Reclaim.StallBudget (each also a callback_stall report).");
        m.CreateObservableCounter("kmem.cache.double_frees",
            () => ObserveCaches((l, c, in s, n) => l.Add(new(s.DoubleFrees, n))),
            "{free}", "Double frees caught: dropped at the slab and reported, or thrown at their caller.");
        m.CreateObservableCounter("kmem.cache.free_list.repairs",
            () => ObserveCaches((l, c, in s, n) => l.Add(new(s.FreeListRepairs, n))),
            "{repair}", "Slab free lists found damaged (a write after free) and rebuilt from the slab's bitmap.");
        m.CreateObservableCounter("kmem.cache.objects.leaked", ObserveLeaks,
            "{object}", "Objects still live when their cache was disposed (their slabs stay mapped). Reported for disposed caches that leaked, which keep their registry slot.");
    }

    private static KeyValuePair<string, object?> SlabState(string state) => new("kmem.slab.state", state);

    /// <summary>
    /// One instrument's measurements over every live cache that has held a slab (as
    /// <see cref="SlabInfo.Snapshot"/> lists them: the unused kmalloc classes are left out).
    /// </summary>
    private static List<Measurement<long>> ObserveCaches(CacheEmit emit)
    {
        var into = new List<Measurement<long>>();
        // A destructor may take only leaf locks; GetStatistics takes list_lock.
        if (LockValidator.InLeafOnlyRegion)
            return into;
        List<SlabCacheCore> caches;
        try
        {
            caches = SlabCacheRegistry.SnapshotUnlocked();
        }
        catch (Exception)
        {
            return into;
        }
        foreach (SlabCacheCore cache in caches)
        {
            int before = into.Count;
            try
            {
                if (cache.IsDisposed)
                    continue;
                SlabCacheStatistics s = cache.GetStatistics();
                // Disposed while read: its counts are its last, but it is gone; stop here.
                if (s.SlabsAllocated == 0 || cache.IsDisposed)
                    continue;
                emit(into, cache, in s, new(CacheName, cache.Name));
            }
            catch (Exception)
            {
                // This cache is left out of this observation; the others are not.
                into.RemoveRange(before, into.Count - before);
            }
        }
        return into;
    }

    private static List<Measurement<long>> ObserveLeaks()
    {
        var into = new List<Measurement<long>>();
        try
        {
            foreach (SlabCacheCore cache in SlabCacheRegistry.SnapshotUnlocked())
            {
                long leaked = cache.LeakedObjects;
                if (leaked > 0 && cache.IsDisposed)
                    into.Add(new(leaked, new KeyValuePair<string, object?>(CacheName, cache.Name)));
            }
        }
        catch (Exception)
        {
            into.Clear();
        }
        return into;
    }

    // ---- Pages ----

    private static void AddPageInstruments(Meter m)
    {
        m.CreateObservableUpDownCounter("kmem.pages.memory.held", static () => Pages.BytesHeld,
            "By", "Bytes of slab and large blocks held from the OS (Pages.BytesHeld): dirty pages and dedicated mappings.");
        m.CreateObservableUpDownCounter("kmem.pages.memory.cached", static () => Pages.CachedBytes,
            "By", "Bytes of freed pages not given back to the OS yet (part of kmem.pages.memory.held), reused first.");
        m.CreateObservableUpDownCounter("kmem.pages.memory.in_use", static () => Pages.BytesInUse,
            "By", "Bytes of blocks handed out: slabs, large allocations, per-CPU chunks.");
        m.CreateObservableUpDownCounter("kmem.pages.memory.reserved", static () => Pages.BytesReserved,
            "By", "Address space reserved: every arena and dedicated mapping.");
        m.CreateObservableCounter("kmem.pages.memory.purged", static () => Pages.PurgedBytes,
            "By", "Bytes given back to the OS by purges.");
        m.CreateObservableGauge("kmem.pages.memory.limit", ObservePageLimit,
            "By", "Pages.Limit, the cap on kmem.pages.memory.held; not reported when there is none.");
        m.CreateObservableUpDownCounter("kmem.pages.arenas", static () => (long)Pages.Arenas,
            "{arena}", "Arenas mapped (one mapping each).");
        m.CreateObservableCounter("kmem.pages.block.allocations", static () => Pages.BlockAllocations,
            "{block}", "Blocks allocated from the page layer (slabs and large allocations).");
        m.CreateObservableCounter("kmem.pages.block.allocation_failures", static () => Pages.FailedAllocations,
            "{block}", "Block allocations refused: the page limit, an injected fault, or the OS.");
        m.CreateObservableCounter("kmem.pages.block.pcp_hits", static () => Pages.PerCpuListHits,
            "{block}", "Block allocations served from a per-CPU list of free blocks, without the zone lock (the kernel's pcp lists).");
        m.CreateObservableUpDownCounter("kmem.kmalloc.large.memory.in_use", static () => Kmalloc.LargeBytes,
            "By", "Bytes of live kmalloc blocks above the largest size class (page-layer blocks of their own).");
    }

    private static IEnumerable<Measurement<long>> ObservePageLimit()
    {
        long limit = Pages.Limit;
        return limit > 0 ? [new(limit)] : [];
    }

    // ---- Reclaim ----

    private static void AddReclaimInstruments(Meter m)
    {
        m.CreateObservableCounter("kmem.reclaim.passes", static () => Reclaim.GetStatistics().Passes,
            "{pass}", "Reclaim passes completed (every tick, kick or request).");
        m.CreateObservableCounter("kmem.reclaim.pressure_passes", static () => Reclaim.GetStatistics().PressurePasses,
            "{pass}", "Deep passes (page limit hit, GC memory load high, or asked for); part of kmem.reclaim.passes.");
        m.CreateObservableCounter("kmem.reclaim.idle_trims", static () => Reclaim.GetStatistics().IdleTrims,
            "{trim}", "Caches trimmed because they had no slow-path activity for Reclaim.IdleTrimDelay.");
        m.CreateObservableCounter("kmem.reclaim.slabs.freed", static () => Reclaim.GetStatistics().SlabsFreed,
            "{slab}", "Slabs the reclaim thread gave back to the page layer, over all caches.");
        m.CreateObservableUpDownCounter("kmem.reclaim.slabs.awaiting_grace_period", static () => Reclaim.GetStatistics().SlabsAwaitingGracePeriod,
            "{slab}", "Empty TypesafeByRcu slabs waiting for an RCU grace period: reclaimed, not yet returned.");
        m.CreateObservableCounter("kmem.reclaim.shrinker.scans", static () => Reclaim.GetStatistics().ShrinkerScans,
            "{call}", "IShrinker.ScanObjects calls.");
        m.CreateObservableCounter("kmem.reclaim.shrinker.objects_freed", static () => Reclaim.GetStatistics().ShrinkerObjectsFreed,
            "{object}", "Objects shrinkers reported freed.");
        m.CreateObservableCounter("kmem.reclaim.allocation.waits", static () => Reclaim.GetStatistics().AllocationWaits,
            "{wait}", "Allocations that hit the page limit and waited for a reclaim pass.");
        m.CreateObservableCounter("kmem.reclaim.allocation.wait_timeouts", static () => Reclaim.GetStatistics().AllocationWaitTimeouts,
            "{wait}", "Of those, waits that ended before the pass did.");
        m.CreateObservableCounter("kmem.reclaim.failures", static () => Reclaim.GetStatistics().Failures,
            "{exception}", "Exceptions caught on the reclaim thread (destructor and shrinker bugs).");
        m.CreateObservableCounter("kmem.reclaim.callback.stalls", static () => Reclaim.GetStatistics().CallbackStalls,
            "{call}", "Destructor, shrinker and RCU callback calls the watchdog found running past Reclaim.StallBudget.");
        m.CreateObservableUpDownCounter("kmem.reclaim.workers.stalled", static () => (long)Reclaim.GetStatistics().StalledWorkers,
            "{thread}", "Reclaim workers replaced while stuck in a callback that has not returned yet.");
        m.CreateObservableCounter("kmem.reclaim.caches_skipped_busy", static () => Reclaim.GetStatistics().CachesSkippedBusy,
            "{cache}", "Times a pass skipped a cache whose sheaf_drain was held (a Shrink, a Dispose, or a stuck worker).");
        m.CreateObservableCounter("kmem.reclaim.shrinkers_skipped_busy", static () => Reclaim.GetStatistics().ShrinkersSkippedBusy,
            "{shrinker}", "Times a pass skipped a shrinker a stuck worker was still running.");
    }

    // ---- RCU ----

    private static void AddRcuInstruments(Meter m)
    {
        m.CreateObservableCounter("kmem.rcu.grace_periods", static () => Rcu.GetStatistics().GracePeriods,
            "{grace_period}", "RCU grace periods completed.");
        m.CreateObservableCounter("kmem.rcu.synchronize.shared", static () => Rcu.GetStatistics().SharedGracePeriods,
            "{call}", "Rcu.Synchronize calls served by a grace period another caller ran.");
        m.CreateObservableCounter("kmem.rcu.reader.waits", static () => Rcu.GetStatistics().ReaderWaits,
            "{wait}", "Times a grace period waited for a reader still in an older read-side section.");
        m.CreateObservableUpDownCounter("kmem.rcu.readers", static () => (long)Rcu.GetStatistics().RegisteredReaders,
            "{thread}", "Threads registered as RCU readers.");
        m.CreateObservableCounter("kmem.rcu.callbacks.queued", static () => Rcu.GetStatistics().CallbacksQueued,
            "{callback}", "Callbacks queued by Rcu.Call and Kmalloc.FreeRcu.");
        m.CreateObservableCounter("kmem.rcu.callbacks.invoked", static () => Rcu.GetStatistics().CallbacksInvoked,
            "{callback}", "Callbacks run after their grace period.");
        m.CreateObservableCounter("kmem.rcu.callbacks.failures", static () => Rcu.GetStatistics().CallbackFailures,
            "{callback}", "Callbacks that threw (Rcu.LastFailure).");
        m.CreateObservableUpDownCounter("kmem.rcu.callbacks.pending", static () => Rcu.GetStatistics().CallbacksPending,
            "{callback}", "Callbacks queued and not yet run.");
        m.CreateObservableCounter("kmem.rcu.callback_batches", static () => Rcu.GetStatistics().CallbackBatches,
            "{batch}", "Batches of callbacks run by the kmem-rcu thread, one grace period each.");
    }

    // ---- Locks ----

    private static void AddLockInstruments(Meter m)
    {
        m.CreateObservableCounter("kmem.lock.acquisitions",
            () => ObserveLocks(static s => s.Acquired),
            "{acquisition}", "Acquisitions of Kmem's locks, per kmem.lock.class, summed over its live locks (counted in every build, under the lock). A collected lock (a disposed cache's) drops out of the sum.");
        m.CreateObservableCounter("kmem.lock.contentions",
            () => ObserveLocks(static s => s.Contended),
            "{acquisition}", "Acquisitions that found the lock held and waited, per kmem.lock.class.");
        m.CreateObservableCounter("kmem.lock.wait.time", ObserveLockWaits,
            "s", "Time contended acquisitions waited, per kmem.lock.class.");
        m.CreateObservableUpDownCounter("kmem.lock.instances",
            () => ObserveLocks(static s => s.Instances),
            "{lock}", "Live locks of each kmem.lock.class (one per cache for the per-cache classes).");
    }

    private static List<Measurement<long>> ObserveLocks(Func<LockStatistics, long> select)
    {
        var into = new List<Measurement<long>>();
        try
        {
            foreach (LockStatistics s in LockStatistics.ByClass())
                into.Add(new(select(s), new KeyValuePair<string, object?>("kmem.lock.class", s.Name)));
        }
        catch (Exception)
        {
            into.Clear();
        }
        return into;
    }

    private static List<Measurement<double>> ObserveLockWaits()
    {
        var into = new List<Measurement<double>>();
        try
        {
            foreach (LockStatistics s in LockStatistics.ByClass())
                into.Add(new(s.TotalWait.TotalSeconds, new KeyValuePair<string, object?>("kmem.lock.class", s.Name)));
        }
        catch (Exception)
        {
            into.Clear();
        }
        return into;
    }

    // ---- Per-CPU allocators ----

    private static void AddPerCpuInstruments(Meter m)
    {
        m.CreateObservableUpDownCounter("kmem.percpu.memory.held",
            () => ObservePerCpu(static s => s.BytesHeld),
            "By", "Bytes of chunk memory a per-CPU allocator holds from the page layer, all CPUs (tag kmem.percpu.allocator.name).");
        m.CreateObservableUpDownCounter("kmem.percpu.memory.in_use",
            () => ObservePerCpu(static s => s.BytesInUse * PerCpuAllocator.Units),
            "By", "Bytes of live per-CPU areas, all CPUs (an area's size times the possible CPUs).");
        m.CreateObservableUpDownCounter("kmem.percpu.areas",
            () => ObservePerCpu(static s => s.Areas),
            "{area}", "Live per-CPU areas.");
        m.CreateObservableUpDownCounter("kmem.percpu.chunks",
            () => ObservePerCpu(static s => s.Chunks),
            "{chunk}", "Chunks held.");
    }

    private static List<Measurement<long>> ObservePerCpu(Func<PerCpuStatistics, long> select)
    {
        var into = new List<Measurement<long>>();
        try
        {
            foreach (PerCpuAllocator a in PerCpuAllocator.Live)
            {
                if (a.IsDisposed)
                    continue;
                // pcpu_lock, a leaf: legal anywhere but under another leaf.
                PerCpuStatistics s = a.GetStatistics();
                into.Add(new(select(s), new KeyValuePair<string, object?>("kmem.percpu.allocator.name", a.Name)));
            }
        }
        catch (Exception)
        {
            into.Clear();
        }
        return into;
    }

    // ---- Memory groups ----

    private static void AddMemoryGroupInstruments(Meter m)
    {
        m.CreateObservableUpDownCounter("kmem.memory_group.usage",
            () => ObserveGroups(static g => g.Usage),
            "By", "Bytes charged to the group and its subtree by live objects and areas (charge stock left out), per kmem.memory_group.name.");
        m.CreateObservableGauge("kmem.memory_group.limit",
            () => ObserveGroups(static g => g.Limit == long.MaxValue ? null : g.Limit),
            "By", "The group's byte limit (for its subtree); not reported for a group without one.");
        m.CreateObservableGauge("kmem.memory_group.peak",
            () => ObserveGroups(static g => g.Peak),
            "By", "The highest the group's counter reached, stock included (memory.peak).");
        m.CreateObservableCounter("kmem.memory_group.charge_failures",
            () => ObserveGroups(static g => g.Failures),
            "{charge}", "Charges refused because this group's limit would have been passed (failcnt).");
    }

    private static List<Measurement<long>> ObserveGroups(Func<MemoryGroup, long?> select)
    {
        var into = new List<Measurement<long>>();
        try
        {
            foreach (MemoryGroup g in MemoryGroup.OnlineUnlocked())
            {
                if (select(g) is long v)
                    into.Add(new(v, new KeyValuePair<string, object?>("kmem.memory_group.name", g.Name)));
            }
        }
        catch (Exception)
        {
            into.Clear();
        }
        return into;
    }

    // ---- Reports ----

    private static void AddReportInstruments(Meter m)
    {
        m.CreateObservableCounter("kmem.reports", ObserveReports,
            "{report}", "Problems Kmem found and dealt with (SlabReports), by kmem.report.kind: double_free, corrupted_free_list, leak, destructor_failed, deferred_free_failed, callback_stall.");
        m.CreateObservableCounter("kmem.report.handler_failures", static () => SlabReports.HandlerFailures,
            "{call}", "SlabReports.Reported handler calls that threw (swallowed).");
    }

    private static List<Measurement<long>> ObserveReports()
    {
        var into = new List<Measurement<long>>(s_reportKinds.Length);
        for (int k = 0; k < s_reportKinds.Length; k++)
            into.Add(new(SlabReports.CountOf((SlabReportKind)k), new KeyValuePair<string, object?>("kmem.report.kind", s_reportKinds[k])));
        return into;
    }

    /// <summary>DoubleFree → double_free.</summary>
    internal static string ToSnakeCase(string name)
    {
        var sb = new System.Text.StringBuilder(name.Length + 4);
        for (int i = 0; i < name.Length; i++)
        {
            char c = name[i];
            if (char.IsUpper(c))
            {
                if (i > 0)
                    sb.Append('_');
                sb.Append(char.ToLowerInvariant(c));
            }
            else
            {
                sb.Append(c);
            }
        }
        return sb.ToString();
    }
}
