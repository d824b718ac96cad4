using Kmem.Cli;

namespace Kmem.Cli.Tests;

/// <summary>
/// <see cref="KmemMetricsCollector"/> on events made here, named and laid out as .NET 10's
/// MetricsEventSource sends them (and as TraceEvent names them): what makes a snapshot,
/// which events are someone else's, and what an empty value means.
/// </summary>
public class MetricsCollectorTests
{
    private const string Session = "our-session";

    private static Func<string, object?> Payload(params (string Name, object Value)[] fields) =>
        name => fields.FirstOrDefault(f => f.Name == name).Value;

    private static RemoteSnapshot? Feed(KmemMetricsCollector c, string eventName, params (string, object)[] fields) =>
        c.OnEvent(eventName, Payload(fields));

    private static void Begin(KmemMetricsCollector c, string meter = "Kmem", string session = Session) =>
        Feed(c, "BeginInstrumentReporting", ("sessionId", session), ("meterName", meter), ("instrumentName", "kmem.cache.objects.active"));

    private static void Value(KmemMetricsCollector c, string instrument, string tags, string value,
        string eventName = "UpDownCounterRateValuePublished", string session = Session, string meter = "Kmem") =>
        Feed(c, eventName, ("sessionId", session), ("meterName", meter), ("instrumentName", instrument), ("tags", tags),
            ("rate", ""), (eventName == "GaugeValuePublished" ? "lastValue" : "value", value));

    private static void Cache(KmemMetricsCollector c, string name, long active, long total, long bytes, string session = Session)
    {
        Value(c, "kmem.cache.objects.active", $"kmem.cache.name={name}", $"{active}", session: session);
        Value(c, "kmem.cache.objects.total", $"kmem.cache.name={name}", $"{total}", session: session);
        Value(c, "kmem.cache.memory.held", $"kmem.cache.name={name}", $"{bytes}", session: session);
    }

    private static RemoteSnapshot Collect(KmemMetricsCollector c, Action<KmemMetricsCollector> values)
    {
        Assert.Null(Feed(c, "Collection/Start", ("sessionId", Session)));
        values(c);
        RemoteSnapshot? s = Feed(c, "Collection/Stop", ("sessionId", Session), ("intervalEndTime", new DateTime(2026, 1, 2, 3, 4, 5)));
        Assert.NotNull(s);
        return s;
    }

    [Fact]
    public void A_collection_is_a_snapshot_of_every_cache_and_the_page_figures()
    {
        var c = new KmemMetricsCollector(Session);
        Begin(c);
        RemoteSnapshot s = Collect(c, c =>
        {
            Cache(c, "dentry", 900, 1000, 65536);
            Value(c, "kmem.cache.objects.cached", "kmem.cache.name=dentry", "7");
            foreach (var (state, n) in new[] { ("full", "3"), ("partial", "2"), ("empty", "1"), ("grace_period", "4") })
                Value(c, "kmem.cache.slabs", $"kmem.cache.name=dentry,kmem.slab.state={state}", n);
            Value(c, "kmem.cache.constructor.calls", "kmem.cache.name=dentry", "11", "CounterRateValuePublished");
            Value(c, "kmem.cache.destructor.calls", "kmem.cache.name=dentry", "5", "CounterRateValuePublished");
            Cache(c, "inode", 1, 10, 4096);
            Value(c, "kmem.pages.memory.held", "", "1048576");
            Value(c, "kmem.pages.memory.cached", "", "0");
            Value(c, "kmem.pages.memory.in_use", "", "7.5E+5");
            Value(c, "kmem.kmalloc.large.memory.in_use", "", "0");
        });

        Assert.True(s.HasKmemMeter);
        Assert.Equal(new DateTime(2026, 1, 2, 3, 4, 5, DateTimeKind.Utc), s.IntervalEnd);
        Assert.Equal(DateTimeKind.Utc, s.IntervalEnd.Kind);
        Assert.Equal((1048576L, 0L, 750000L, 0L), (s.PagesHeld!.Value, s.PagesCached!.Value, s.PagesInUse!.Value, s.LargeKmalloc!.Value));
        RemoteCache dentry = Assert.Single(s.Caches, x => x.Name == "dentry");
        // The slabs of SlabCacheStatistics.Slabs are full + partial + empty; grace-period ones apart.
        Assert.Equal(new RemoteCache("dentry", 900, 1000, 7, 6, 4, 65536, 11, 5), dentry);
        Assert.Equal(90, dentry.PercentActive);
        Assert.Equal(new RemoteCache("inode", 1, 10, 0, 0, 0, 4096, 0, 0), Assert.Single(s.Caches, x => x.Name == "inode"));
    }

    [Fact]
    public void Another_sessions_events_and_other_meters_are_ignored()
    {
        var c = new KmemMetricsCollector(Session);
        Begin(c, session: "theirs");
        Begin(c, meter: "System.Runtime");
        Assert.False(c.KmemMeterSeen);
        Assert.Null(Feed(c, "Collection/Stop", ("sessionId", "theirs")));

        RemoteSnapshot s = Collect(c, c =>
        {
            Cache(c, "theirs", 1, 1, 1, session: "theirs");
            Value(c, "kmem.cache.objects.active", "kmem.cache.name=x", "5", meter: "NotKmem");
        });
        Assert.False(s.HasKmemMeter);
        Assert.Empty(s.Caches);
        Assert.Null(s.PagesHeld);
    }

    [Fact]
    public void An_empty_value_is_a_series_without_measurement_and_is_left_out()
    {
        var c = new KmemMetricsCollector(Session);
        Begin(c);
        RemoteSnapshot s = Collect(c, c =>
        {
            Cache(c, "live", 1, 2, 4096);
            // A cache disposed since the last collection: its series come back empty.
            Value(c, "kmem.cache.objects.active", "kmem.cache.name=gone", "");
            Value(c, "kmem.cache.memory.held", "kmem.cache.name=gone", "");
            // One that went away between two callbacks: a figure, but not both defining ones.
            Value(c, "kmem.cache.objects.total", "kmem.cache.name=half", "64");
        });
        Assert.Equal(["live"], s.Caches.Select(x => x.Name));
    }

    [Fact]
    public void Values_count_only_inside_a_collection_and_each_collection_starts_afresh()
    {
        var c = new KmemMetricsCollector(Session);
        Begin(c);
        Cache(c, "early", 1, 1, 1);   // before any CollectionStart: halfway through one
        Assert.Null(Feed(c, "Collection/Stop", ("sessionId", Session)));

        RemoteSnapshot first = Collect(c, c => Cache(c, "a", 1, 1, 4096));
        RemoteSnapshot second = Collect(c, c => Cache(c, "b", 2, 2, 8192));
        Assert.Equal(["a"], first.Caches.Select(x => x.Name));
        Assert.Equal(["b"], second.Caches.Select(x => x.Name));

        // The names the EventSource's own methods have are taken too.
        Assert.Null(Feed(c, "CollectionStart", ("sessionId", Session)));
        Cache(c, "c", 3, 3, 4096);
        Assert.Equal(["c"], Feed(c, "CollectionStop", ("sessionId", Session))!.Caches.Select(x => x.Name));
    }

    [Fact]
    public void Another_session_holding_the_event_source_is_fatal_but_a_later_one_refused_is_not()
    {
        var c = new KmemMetricsCollector(Session);
        Feed(c, "MultipleSessionsNotSupportedError", ("runningSessionId", Session));
        Assert.Null(c.Fatal);
        Feed(c, "MultipleSessionsNotSupportedError", ("runningSessionId", "SHARED"));
        Assert.Contains("another tool is reading the process's metrics", c.Fatal);
    }

    [Fact]
    public void Errors_of_the_target_become_a_warning()
    {
        var c = new KmemMetricsCollector(Session);
        Feed(c, "ObservableInstrumentCallbackError", ("sessionId", "theirs"), ("errorMessage", "not ours"));
        Assert.Null(c.Warning);
        Feed(c, "ObservableInstrumentCallbackError", ("sessionId", Session), ("errorMessage", "System.Exception: boom\n   at Callback()"));
        Assert.Equal("the target reported: System.Exception: boom", c.Warning);
        Feed(c, "TimeSeriesLimitReached", ("sessionId", Session));
        Assert.Contains("time series limit", c.Warning);
    }

    [Theory]
    [InlineData("", new string[0])]
    [InlineData("kmem.cache.name=dentry", new[] { "kmem.cache.name", "dentry" })]
    [InlineData("kmem.cache.name=a,b=c,kmem.slab.state=full", new[] { "kmem.cache.name", "a,b=c", "kmem.slab.state", "full" })]
    [InlineData("kmem.cache.name=,kmem.slab.state=", new[] { "kmem.cache.name", "", "kmem.slab.state", "" })]
    [InlineData("other=1,kmem.cache.name=x,y", new[] { "other", "1", "kmem.cache.name", "x,y" })]
    public void Tags_split_only_before_a_known_key(string tags, string[] expected)
    {
        Dictionary<string, string> parsed = KmemMetricsCollector.ParseTags(tags);
        var pairs = expected.Chunk(2).ToDictionary(p => p[0], p => p[1]);
        Assert.Equal(pairs, parsed);
    }

    [Fact]
    public void The_metrics_argument_names_each_instrument_of_the_Kmem_meter()
    {
        string[] specs = KmemMetricsCollector.MetricsArgument.Split(',');
        Assert.Equal(KmemMetricsCollector.Instruments.Count, specs.Length);
        Assert.All(specs, s => Assert.StartsWith("Kmem\\kmem.", s));
        Assert.Contains("Kmem\\kmem.cache.objects.active", specs);
    }

    [Fact]
    public void The_provider_has_the_arguments_dotnet_counters_gives_MetricsEventSource()
    {
        var provider = KmemMetricsSession.Provider("abc", TimeSpan.FromSeconds(0.5));
        Assert.Equal("System.Diagnostics.Metrics", provider.Name);
        Assert.Equal(2, provider.Keywords);   // TimeSeriesValues
        Assert.Equal(new Dictionary<string, string>
        {
            ["SessionId"] = "abc",
            ["Metrics"] = KmemMetricsCollector.MetricsArgument,
            ["RefreshInterval"] = "0.5",
            ["MaxTimeSeries"] = "20000",
            ["MaxHistograms"] = "0",
        }, provider.Arguments);
    }
}
