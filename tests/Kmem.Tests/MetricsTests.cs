using System.Diagnostics.Metrics;

namespace Kmem.Tests;

/// <summary>
/// One measurement a <see cref="KmemMeterRecorder"/> received: instrument, value (long or
/// double, as a double) and tags.
/// </summary>
internal sealed record Recorded(string Instrument, double Value, IReadOnlyDictionary<string, object?> Tags)
{
    public string? Tag(string key) => Tags.TryGetValue(key, out object? v) ? v as string : null;
}

/// <summary>
/// A <see cref="MeterListener"/> on the Kmem meter, as dotnet-counters or OpenTelemetry
/// would have. It never makes the meter itself: it waits for Kmem to publish it, which the
/// first cache of the process does, so every test that uses it also tests that.
/// </summary>
internal sealed class KmemMeterRecorder : IDisposable
{
    /// <summary>Created last by KmemMetrics: once it is published, every instrument is.</summary>
    private const string LastInstrument = "kmem.report.handler_failures";

    private readonly MeterListener _listener = new();
    private readonly Lock _gate = new();
    private readonly List<Instrument> _instruments = [];
    private List<Recorded>? _recording;

    public KmemMeterRecorder()
    {
        // Uses a cache, as any Kmem program does; nothing more is asked of Kmem.
        unsafe
        {
            Kmalloc.Free(Kmalloc.Alloc(8));
        }
        _listener.InstrumentPublished = (instrument, listener) =>
        {
            if (instrument.Meter.Name != "Kmem")
                return;
            lock (_gate)
                _instruments.Add(instrument);
            listener.EnableMeasurementEvents(instrument);
        };
        _listener.SetMeasurementEventCallback<long>((i, v, tags, _) => Add(i, v, tags));
        _listener.SetMeasurementEventCallback<double>((i, v, tags, _) => Add(i, v, tags));
        _listener.Start();
        Assert.True(SpinWait.SpinUntil(() => Instruments.Any(i => i.Name == LastInstrument), TimeSpan.FromSeconds(30)),
            "the Kmem meter was not published within 30 s of the first cache");
    }

    public IReadOnlyList<Instrument> Instruments
    {
        get
        {
            lock (_gate)
                return [.. _instruments];
        }
    }

    /// <summary>Observes every Kmem instrument now (on this thread) and returns what they measured.</summary>
    public List<Recorded> Collect()
    {
        var into = new List<Recorded>();
        lock (_gate)
            _recording = into;
        try
        {
            _listener.RecordObservableInstruments();
        }
        finally
        {
            lock (_gate)
                _recording = null;
        }
        return into;
    }

    private void Add(Instrument instrument, double value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        var map = new Dictionary<string, object?>(StringComparer.Ordinal);
        foreach (KeyValuePair<string, object?> t in tags)
            map[t.Key] = t.Value;
        lock (_gate)
            _recording?.Add(new Recorded(instrument.Name, value, map));
    }

    public void Dispose() => _listener.Dispose();
}

internal static class RecordedExtensions
{
    public static List<Recorded> Of(this List<Recorded> all, string instrument, string? cache = null) =>
        [.. all.Where(r => r.Instrument == instrument && (cache == null || r.Tag("kmem.cache.name") == cache))];

    /// <summary>The single measurement of <paramref name="instrument"/> for <paramref name="cache"/> (or the global one).</summary>
    public static long Single(this List<Recorded> all, string instrument, string? cache = null)
    {
        List<Recorded> found = all.Of(instrument, cache);
        Assert.True(found.Count == 1, $"{instrument} for {cache ?? "the process"}: {found.Count} measurements, not 1");
        return (long)found[0].Value;
    }

    public static long Tagged(this List<Recorded> all, string instrument, string cache, string key, string value)
    {
        List<Recorded> found = [.. all.Of(instrument, cache).Where(r => r.Tag(key) == value)];
        Assert.True(found.Count == 1, $"{instrument} {key}={value} for {cache}: {found.Count} measurements, not 1");
        return (long)found[0].Value;
    }

    /// <summary>The count of reports of one kind (kmem.reports, tag kmem.report.kind).</summary>
    public static long Reports(this List<Recorded> all, string kind)
    {
        List<Recorded> found = [.. all.Of("kmem.reports").Where(r => r.Tag("kmem.report.kind") == kind)];
        Assert.True(found.Count == 1, $"kmem.reports kind={kind}: {found.Count} measurements, not 1");
        return (long)found[0].Value;
    }

    public static bool Mentions(this List<Recorded> all, string cache) =>
        all.Any(r => r.Tag("kmem.cache.name") == cache);
}

/// <summary>
/// The Kmem meter as a listener sees it. Other tests create and dispose caches at the same
/// time, so every cache here has a name of its own and is looked up by it.
/// </summary>
public unsafe class MetricsTests
{
    private static string UniqueName(string what) => $"metrics-{what}-{Guid.NewGuid():N}";

    [Fact]
    public void The_meter_is_published_by_the_first_cache_with_named_and_documented_instruments()
    {
        using var recorder = new KmemMeterRecorder();
        IReadOnlyList<Instrument> instruments = recorder.Instruments;
        string? informational = typeof(SlabCache).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().Single().InformationalVersion;
        Assert.Equal(informational.Split('+')[0], instruments[0].Meter.Version);   // the package version, not MinVer's major.0.0.0
        Assert.DoesNotContain("+", instruments[0].Meter.Version);
        string[] expected =
        [
            "kmem.cache.objects.active", "kmem.cache.objects.total", "kmem.cache.slabs", "kmem.cache.memory.held",
            "kmem.cache.sheaf.refills", "kmem.cache.sheaf.flushes", "kmem.cache.objects.leaked",
            "kmem.pages.memory.held", "kmem.pages.memory.cached", "kmem.pages.memory.in_use", "kmem.pages.memory.reserved",
            "kmem.pages.memory.purged", "kmem.pages.arenas", "kmem.reclaim.passes", "kmem.reclaim.callback.stalls",
            "kmem.rcu.grace_periods", "kmem.rcu.callbacks.pending", "kmem.lock.acquisitions", "kmem.lock.contentions",
            "kmem.lock.wait.time", "kmem.memory_group.usage", "kmem.memory_group.limit", "kmem.memory_group.charge_failures",
            "kmem.reports",
        ];
        foreach (string name in expected)
            Assert.Contains(instruments, i => i.Name == name);
        Assert.Equal(instruments.Count, instruments.Select(i => i.Name).Distinct().Count());
        foreach (Instrument i in instruments)
        {
            Assert.Matches("^kmem(\\.[a-z_]+)+$", i.Name);
            Assert.False(string.IsNullOrWhiteSpace(i.Unit), $"{i.Name} has no unit");
            Assert.False(string.IsNullOrWhiteSpace(i.Description), $"{i.Name} has no description");
            Assert.True(i.IsObservable, $"{i.Name} is not observable: the allocator would pay for it");
            // No metric name is the namespace of another (OpenTelemetry's naming rule).
            Assert.DoesNotContain(instruments, o => o.Name.StartsWith(i.Name + ".", StringComparison.Ordinal));
        }
        Assert.Equal("By", instruments.Single(i => i.Name == "kmem.cache.memory.held").Unit);
        Assert.Equal("s", instruments.Single(i => i.Name == "kmem.lock.wait.time").Unit);
    }

    [Fact]
    public void A_cache_reports_what_it_holds_and_what_its_slow_paths_did()
    {
        const int N = 1000, M = 300;
        string name = UniqueName("counts");
        using var recorder = new KmemMeterRecorder();
        using var cache = SlabCache.Create(name, 64, TestOptions.Unmerged);
        var objects = new List<nint>();
        for (int i = 0; i < N; i++)
            objects.Add((nint)cache.Alloc());
        for (int i = 0; i < M; i++)
            cache.Free((void*)objects[i]);

        List<Recorded> all = recorder.Collect();
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.Equal(N - M, all.Single("kmem.cache.objects.active", name));
        long total = all.Single("kmem.cache.objects.total", name);
        Assert.True(total >= N - M && total % s.ObjectsPerSlab == 0, $"{total} object slots");
        long held = all.Single("kmem.cache.memory.held", name);
        Assert.True(held > 0 && held % s.SlabSize == 0, $"{held} bytes held");
        Assert.Equal(total / s.ObjectsPerSlab * s.SlabSize, held);
        long slabs = all.Of("kmem.cache.slabs", name).Sum(r => (long)r.Value);
        Assert.Equal(held / s.SlabSize, slabs);
        Assert.Equal(4, all.Of("kmem.cache.slabs", name).Select(r => r.Tag("kmem.slab.state")).Distinct().Count());
        Assert.Equal(0, all.Tagged("kmem.cache.slabs", name, "kmem.slab.state", "grace_period"));
        Assert.True(all.Single("kmem.cache.slab.allocations", name) >= slabs);
        // Every allocation past the first of each sheafful came from the sheaf; the slow path
        // refilled it from the slabs at least N / capacity times (the barn was empty).
        long refills = all.Tagged("kmem.cache.sheaf.refills", name, "kmem.sheaf.source", "slabs");
        Assert.True(refills >= (N + cache.SheafCapacity - 1) / cache.SheafCapacity, $"{refills} refills of {cache.SheafCapacity}");
        Assert.Equal(0, all.Tagged("kmem.cache.sheaf.refills", name, "kmem.sheaf.source", "barn"));
        // The M frees overflowed the sheaf the allocations left at least once: a full sheaf went to the barn.
        Assert.True(all.Tagged("kmem.cache.sheaf.flushes", name, "kmem.sheaf.target", "barn") >= 1);
        Assert.Equal(0, all.Single("kmem.cache.double_frees", name));
        Assert.Empty(all.Of("kmem.cache.constructor.calls", name));   // no constructor, no such series
        foreach (Recorded r in all.Where(r => r.Tag("kmem.cache.name") == name))
            Assert.All(r.Tags.Keys, k => Assert.Contains(k, new[] { "kmem.cache.name", "kmem.slab.state", "kmem.sheaf.source", "kmem.sheaf.target" }));

        for (int i = M; i < N; i++)
            cache.Free((void*)objects[i]);
        all = recorder.Collect();
        Assert.Equal(0, all.Single("kmem.cache.objects.active", name));
        Assert.True(all.Single("kmem.cache.objects.cached", name) > 0, "the frees left no object in the sheaf and barn");
    }

    [Fact]
    public void A_disposed_cache_is_no_longer_reported_and_a_leaking_one_reports_its_leak()
    {
        string gone = UniqueName("gone"), leaking = UniqueName("leak");
        using var recorder = new KmemMeterRecorder();
        var cache = SlabCache.Create(gone, 48, TestOptions.Unmerged);
        var objects = Enumerable.Range(0, 10).Select(_ => (nint)cache.Alloc()).ToList();
        Assert.Equal(10, recorder.Collect().Single("kmem.cache.objects.active", gone));
        foreach (nint p in objects)
            cache.Free((void*)p);
        cache.Dispose();
        Assert.False(recorder.Collect().Mentions(gone), "a disposed cache is still reported");

        long leaksBefore = recorder.Collect().Reports("leak");
        var leaky = SlabCache.Create(leaking, 48, TestOptions.Unmerged);
        for (int i = 0; i < 3; i++)
            leaky.Alloc();
        leaky.Dispose();   // three live objects: a leak, reported; the cache keeps its slot
        List<Recorded> all = recorder.Collect();
        Assert.Equal(3, all.Single("kmem.cache.objects.leaked", leaking));
        Assert.Empty(all.Of("kmem.cache.objects.active", leaking));
        long leaks = all.Reports("leak");
        Assert.True(leaks > leaksBefore, "the leak report was not counted");
        // Other tests may leak meanwhile: the count read after is at least the one measured.
        Assert.True(SlabReports.CountOf(SlabReportKind.Leak) >= leaks);
    }

    [Fact]
    public void Every_report_kind_has_a_series_and_the_counts_are_SlabReports()
    {
        using var recorder = new KmemMeterRecorder();
        List<Recorded> reports = recorder.Collect().Of("kmem.reports");
        Assert.Equal(
            ["callback_stall", "corrupted_free_list", "deferred_free_failed", "destructor_failed", "double_free", "leak"],
            reports.Select(r => r.Tag("kmem.report.kind")!).Order().ToArray());
        Assert.True(reports.Sum(r => (long)r.Value) <= SlabReports.Count, "more reports by kind than reports");
    }

    [Fact]
    public void Observing_inside_a_destructor_reports_no_cache_and_does_not_throw()
    {
        using var recorder = new KmemMeterRecorder();
        List<Recorded>? inside = null;
        Exception? thrown = null;
        using var cache = SlabCache.Create(UniqueName("dtor"), 64, new SlabCacheOptions
        {
            Flags = SlabFlags.NoMerge,
            Destructor = _ =>
            {
                if (inside != null || thrown != null)
                    return;
                try
                {
                    inside = recorder.Collect();   // a leaf-only region: list_lock may not be taken here
                }
                catch (Exception e)
                {
                    thrown = e;
                }
            },
        });
        cache.Free(cache.Alloc());
        cache.Shrink();
        Assert.Null(thrown);
        Assert.NotNull(inside);
        Assert.DoesNotContain(inside, r => r.Instrument.StartsWith("kmem.cache.", StringComparison.Ordinal) && r.Instrument != "kmem.cache.objects.leaked");
        Assert.Single(inside.Of("kmem.pages.memory.held"));
    }

    [Fact]
    public void Observing_beside_allocation_creation_and_Dispose_neither_throws_nor_deadlocks()
    {
        using var recorder = new KmemMeterRecorder();
        using var stop = new CancellationTokenSource(TimeSpan.FromSeconds(1.5));
        var failures = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        int observations = 0, cycles = 0;
        void Guard(Action body)
        {
            try
            {
                body();
            }
            catch (Exception e)
            {
                failures.Enqueue(e);
            }
        }
        var workers = Enumerable.Range(0, 2).Select(w => new Thread(() => Guard(() =>
        {
            for (int round = 0; !stop.IsCancellationRequested; round++)
            {
                var options = round % 3 == 0
                    ? new SlabCacheOptions { Flags = SlabFlags.NoMerge, Constructor = _ => true, Destructor = _ => { } }
                    : TestOptions.Unmerged;
                var cache = SlabCache.Create(UniqueName($"race-{w}"), 32 + 16 * (round % 8), options);
                var objects = new List<nint>();
                for (int i = 0; i < 300; i++)
                    objects.Add((nint)cache.Alloc());
                foreach (nint p in objects)
                    cache.Free((void*)p);
                cache.Dispose();
                Interlocked.Increment(ref cycles);
            }
        }))).Append(new Thread(() => Guard(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                List<Recorded> all = recorder.Collect();
                Assert.NotEmpty(all.Of("kmem.pages.memory.held"));
                Interlocked.Increment(ref observations);
            }
        }))).ToList();
        foreach (Thread t in workers)
            t.Start();
        foreach (Thread t in workers)
            Assert.True(t.Join(TimeSpan.FromSeconds(60)), "a thread did not finish: observation deadlocked with the allocator");
        Assert.Empty(failures);
        Assert.True(observations > 0 && cycles > 0, $"{observations} observations, {cycles} cache lifetimes");
    }
}

/// <summary>Measurements compared with process-wide figures that other tests would move: these run alone.</summary>
[Collection(nameof(GlobalStateCollection))]
public unsafe class MetricsGlobalTests
{
    [Fact]
    public void Page_measurements_are_the_page_layer_figures()
    {
        using var recorder = new KmemMeterRecorder();
        var blocks = Enumerable.Range(0, 4).Select(_ => (nint)Kmalloc.Alloc(1 << 20)).ToList();   // large blocks: pages held
        try
        {
            // The reclaim thread may purge between the reads: retry until the figures held still.
            for (int attempt = 0; ; attempt++)
            {
                long held = Pages.BytesHeld, inUse = Pages.BytesInUse, cached = Pages.CachedBytes, reserved = Pages.BytesReserved;
                List<Recorded> all = recorder.Collect();
                if (held != Pages.BytesHeld || inUse != Pages.BytesInUse || cached != Pages.CachedBytes || reserved != Pages.BytesReserved)
                {
                    Assert.True(attempt < 100, "the page layer never held still for a reading");
                    Thread.Sleep(10);
                    continue;
                }
                Assert.Equal(held, all.Single("kmem.pages.memory.held"));
                Assert.Equal(inUse, all.Single("kmem.pages.memory.in_use"));
                Assert.Equal(cached, all.Single("kmem.pages.memory.cached"));
                Assert.Equal(reserved, all.Single("kmem.pages.memory.reserved"));
                Assert.Equal(Pages.Arenas, all.Single("kmem.pages.arenas"));
                Assert.True(all.Single("kmem.kmalloc.large.memory.in_use") >= 4 << 20);
                Assert.True(held >= 4 << 20);
                break;
            }
            Assert.Empty(recorder.Collect().Of("kmem.pages.memory.limit"));
            Pages.Limit = 1L << 40;
            try
            {
                Assert.Equal(1L << 40, recorder.Collect().Single("kmem.pages.memory.limit"));
            }
            finally
            {
                Pages.Limit = 0;
            }
        }
        finally
        {
            foreach (nint b in blocks)
                Kmalloc.Free((void*)b);
        }
    }

    [Fact]
    public void Observation_does_not_wait_for_a_Dispose_stuck_in_a_destructor()
    {
        using var recorder = new KmemMeterRecorder();
        using var entered = new ManualResetEventSlim(false);
        using var release = new ManualResetEventSlim(false);
        string name = $"metrics-stuck-{Guid.NewGuid():N}";
        // Disposed by the disposer thread below, which is what the test is about.
#pragma warning disable CA2000
        var cache = SlabCache.Create(name, 64, new SlabCacheOptions
        {
            Flags = SlabFlags.NoMerge,
            Destructor = _ =>
            {
                entered.Set();
                release.Wait();
            },
        });
#pragma warning restore CA2000
        cache.Free(cache.Alloc());
        // Dispose holds slab_mutex and the cache's sheaf_drain while its destructor runs.
        var disposer = new Thread(cache.Dispose) { IsBackground = true };
        disposer.Start();
        try
        {
            Assert.True(entered.Wait(TimeSpan.FromSeconds(30)), "the destructor never ran");
            List<Recorded>? all = null;
            var observer = new Thread(() => all = recorder.Collect()) { IsBackground = true };
            observer.Start();
            Assert.True(observer.Join(TimeSpan.FromSeconds(20)), "observation waited for the stuck Dispose");
            Assert.NotNull(all);
            Assert.False(all.Mentions(name), "a cache being disposed is reported");
            Assert.NotEmpty(all.Of("kmem.reclaim.passes"));
            Assert.NotEmpty(all.Of("kmem.cache.objects.active"));   // the other caches are
        }
        finally
        {
            release.Set();
            Assert.True(disposer.Join(TimeSpan.FromSeconds(30)), "Dispose did not finish once released");
        }
    }

    [Fact]
    public void Memory_group_measurements_are_its_usage_limit_and_failures()
    {
        using var recorder = new KmemMeterRecorder();
        string name = $"metrics-group-{Guid.NewGuid():N}";
        using var group = MemoryGroup.Root.CreateChild(name, limit: 1 << 20);
        using var cache = SlabCache.Create($"metrics-cg-{Guid.NewGuid():N}", 1000, new SlabCacheOptions { Flags = SlabFlags.NoMerge | SlabFlags.Account });
        var objects = new List<nint>();
        using (group.Enter())
        {
            while (cache.TryAlloc(out void* p))
                objects.Add((nint)p);
        }
        try
        {
            List<Recorded> all = recorder.Collect();
            List<Recorded> mine(string instrument) => [.. all.Of(instrument).Where(r => r.Tag("kmem.memory_group.name") == name)];
            Assert.Equal(group.Usage, (long)Assert.Single(mine("kmem.memory_group.usage")).Value);
            Assert.Equal(1 << 20, (long)Assert.Single(mine("kmem.memory_group.limit")).Value);
            Assert.Equal(group.Failures, (long)Assert.Single(mine("kmem.memory_group.charge_failures")).Value);
            Assert.True(group.Failures >= 1 && group.Usage > (1 << 20) - 64 * 1024, $"usage {group.Usage}, failures {group.Failures}");
            Assert.DoesNotContain(all.Of("kmem.memory_group.limit"), r => r.Tag("kmem.memory_group.name") == "root");
            Assert.Single(all.Of("kmem.memory_group.usage"), r => r.Tag("kmem.memory_group.name") == "root");
        }
        finally
        {
            foreach (nint p in objects)
                cache.Free((void*)p);
        }
        group.Dispose();
        Assert.DoesNotContain(recorder.Collect().Of("kmem.memory_group.usage"), r => r.Tag("kmem.memory_group.name") == name);
    }

    [Fact]
    public void Rcu_reclaim_and_lock_counters_follow_the_work_done()
    {
        using var recorder = new KmemMeterRecorder();
        List<Recorded> before = recorder.Collect();
        Rcu.Synchronize();
        Assert.True(Reclaim.RunPass());
        List<Recorded> after = recorder.Collect();
        Assert.True(after.Single("kmem.rcu.grace_periods") > before.Single("kmem.rcu.grace_periods"));
        Assert.True(after.Single("kmem.reclaim.passes") > before.Single("kmem.reclaim.passes"));
        Assert.True(after.Single("kmem.rcu.callbacks.pending") >= 0);
        long Lock(List<Recorded> all, string instrument, string lockClass) =>
            (long)Assert.Single(all.Of(instrument), r => r.Tag("kmem.lock.class") == lockClass).Value;
        // rcu_gp_lock is one static lock: never collected, so its count only grows.
        Assert.True(Lock(after, "kmem.lock.acquisitions", "rcu_gp_lock") > Lock(before, "kmem.lock.acquisitions", "rcu_gp_lock"));
        Assert.True(Lock(after, "kmem.lock.acquisitions", "list_lock") > 0);
        Assert.True(Lock(after, "kmem.lock.instances", "slab_mutex") == 1);
        Assert.Contains(after.Of("kmem.lock.wait.time"), r => r.Tag("kmem.lock.class") == "list_lock" && r.Value >= 0);
    }
}
