using System.Globalization;

namespace Kmem.Cli;

/// <summary>
/// Turns the events of the runtime's <c>System.Diagnostics.Metrics</c> EventSource
/// (MetricsEventSource) into <see cref="RemoteSnapshot"/>s of the Kmem meter, one per
/// collection. It knows nothing of EventPipe or TraceEvent: <see cref="OnEvent"/> takes an
/// event's name and a way to read its payload fields by name, so the tests can feed it
/// events without a process.
/// </summary>
/// <remarks>
/// <para>The events used (.NET 8 and later; the payload fields read are named as in
/// MetricsEventSource): <c>BeginInstrumentReporting</c> (meterName), sent for each
/// instrument the session follows before its first value; <c>CollectionStart</c> and
/// <c>CollectionStop</c> (sessionId; TraceEvent calls them Collection/Start and
/// Collection/Stop), around every collection; the values,
/// <c>UpDownCounterRateValuePublished</c> (value) for the observable up-down counters,
/// <c>CounterRateValuePublished</c> (value, the running total; rate is the change) for the
/// observable counters, <c>GaugeValuePublished</c> (lastValue) for gauges, each with
/// meterName, instrumentName and tags; and the errors below.</para>
/// <para>A value field left empty means the series had no measurement in that collection
/// (for Kmem: the cache was disposed, or its read failed): the series is left out, as
/// dotnet-counters drops it.</para>
/// <para>The EventSource serves one session at a time. Values of another tool's session
/// carry its session id and are ignored; if that session was there first, the runtime
/// answers ours with <c>MultipleSessionsNotSupportedError</c>, which is fatal
/// (<see cref="Fatal"/>): no value will come.</para>
/// </remarks>
internal sealed class KmemMetricsCollector(string sessionId)
{
    /// <summary>The EventSource that publishes the values of every <see cref="System.Diagnostics.Metrics.Meter"/>.</summary>
    public const string ProviderName = "System.Diagnostics.Metrics";

    /// <summary>The meter Kmem publishes (Kmem.Diagnostics.KmemMetrics.MeterName).</summary>
    public const string MeterName = "Kmem";

    /// <summary>
    /// The instruments asked for. Only these: the meter has some 70 instruments, most of them
    /// per cache or per lock class, and the target aggregates every series it is asked for
    /// (up to MaxTimeSeries) on its own time.
    /// </summary>
    public static readonly IReadOnlyList<string> Instruments =
    [
        "kmem.cache.objects.active",
        "kmem.cache.objects.total",
        "kmem.cache.objects.cached",
        "kmem.cache.slabs",
        "kmem.cache.memory.held",
        "kmem.cache.constructor.calls",
        "kmem.cache.destructor.calls",
        "kmem.pages.memory.held",
        "kmem.pages.memory.cached",
        "kmem.pages.memory.in_use",
        "kmem.kmalloc.large.memory.in_use",
    ];

    private const string CacheNameTag = "kmem.cache.name";
    private const string SlabStateTag = "kmem.slab.state";

    /// <summary>
    /// The tag keys the instruments above carry. MetricsEventSource writes tags as
    /// <c>key=value,key=value</c> without escaping, so a cache name holding a comma would
    /// split a naive parse; a comma only separates tags where one of these keys follows it.
    /// </summary>
    private static readonly string[] s_tagKeys = [CacheNameTag, SlabStateTag];

    private readonly Dictionary<string, CacheValues> _caches = new(StringComparer.Ordinal);
    private readonly Dictionary<string, long> _pages = new(StringComparer.Ordinal);
    private bool _inCollection;

    /// <summary>The session id given to the EventSource (its SessionId argument); events of other sessions are ignored.</summary>
    public string SessionId { get; } = sessionId;

    /// <summary>The value of the EventSource's <c>Metrics</c> argument: each instrument as <c>Kmem\name</c>.</summary>
    public static string MetricsArgument => string.Join(',', Instruments.Select(i => $"{MeterName}\\{i}"));

    /// <summary>True once the target has reported an instrument of the Kmem meter to this session.</summary>
    public bool KmemMeterSeen { get; private set; }

    /// <summary>Why no value will come, when the EventSource said so (another session holds it); null otherwise.</summary>
    public string? Fatal { get; private set; }

    /// <summary>What the target's EventSource reported wrong and went on after (the last message; null if none).</summary>
    public string? Warning { get; private set; }

    /// <summary>
    /// Takes one event of <see cref="ProviderName"/>. Returns the snapshot it completes (a
    /// <c>CollectionStop</c> of this session after its <c>CollectionStart</c>), else null.
    /// </summary>
    /// <param name="eventName">The event's name (TraceEvent's EventName).</param>
    /// <param name="payload">Reads a payload field by name; null when the event has no such field.</param>
    public RemoteSnapshot? OnEvent(string eventName, Func<string, object?> payload)
    {
        ArgumentNullException.ThrowIfNull(payload);
        if (eventName == "MultipleSessionsNotSupportedError")
        {
            // The running session's id: ours means a later tool was refused, not us.
            if (payload("runningSessionId") as string != SessionId)
                Fatal = "another tool is reading the process's metrics (dotnet-counters, dotnet-monitor, or another kmem top): "
                    + "the runtime serves one metrics session at a time; stop it and try again";
            return null;
        }
        if (payload("sessionId") as string != SessionId)
            return null;

        switch (eventName)
        {
            case "BeginInstrumentReporting":
                if (payload("meterName") as string == MeterName)
                    KmemMeterSeen = true;
                return null;
            // TraceEvent names the two by their task and opcode: Collection/Start, Collection/Stop.
            case "CollectionStart" or "Collection/Start":
                _caches.Clear();
                _pages.Clear();
                _inCollection = true;
                return null;
            case "CollectionStop" or "Collection/Stop":
                if (!_inCollection)
                    return null;   // joined halfway through a collection
                _inCollection = false;
                return Complete(payload("intervalEndTime") is DateTime end ? AsUtc(end) : DateTime.UtcNow);
            case "UpDownCounterRateValuePublished" or "CounterRateValuePublished":
                Record(payload, "value");
                return null;
            case "GaugeValuePublished":
                Record(payload, "lastValue");
                return null;
            case "TimeSeriesLimitReached":
                Warning = "the target's time series limit was reached: some caches are missing";
                return null;
            case "Error" or "ObservableInstrumentCallbackError":
                Warning = $"the target reported: {FirstLine(payload("errorMessage") as string)}";
                return null;
            default:
                return null;
        }
    }

    private void Record(Func<string, object?> payload, string valueField)
    {
        if (!_inCollection || payload("meterName") as string != MeterName || payload("instrumentName") is not string instrument)
            return;
        // Empty: no measurement for this series in this collection (see the remarks).
        if (payload(valueField) is not string text
            || !double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out double number))
            return;
        long value = (long)Math.Round(number);
        string tags = payload("tags") as string ?? "";

        if (!instrument.StartsWith("kmem.cache.", StringComparison.Ordinal))
        {
            _pages[instrument] = value;
            return;
        }
        Dictionary<string, string> tagValues = ParseTags(tags);
        if (!tagValues.TryGetValue(CacheNameTag, out string? name))
            return;
        if (!_caches.TryGetValue(name, out CacheValues? cache))
            _caches[name] = cache = new CacheValues();
        switch (instrument)
        {
            case "kmem.cache.objects.active": cache.Active = value; break;
            case "kmem.cache.objects.total": cache.Total = value; break;
            case "kmem.cache.objects.cached": cache.Cached = value; break;
            case "kmem.cache.memory.held": cache.Bytes = value; break;
            case "kmem.cache.constructor.calls": cache.Constructors = value; break;
            case "kmem.cache.destructor.calls": cache.Destructors = value; break;
            case "kmem.cache.slabs":
                if (tagValues.GetValueOrDefault(SlabStateTag) == "grace_period")
                    cache.GracePeriod += value;
                else
                    cache.Slabs += value;   // full, partial, empty: SlabCacheStatistics.Slabs
                break;
            default:
                break;
        }
    }

    private RemoteSnapshot Complete(DateTime intervalEnd)
    {
        // A cache is shown once it has its two defining figures in this collection: a series
        // that went quiet halfway through (a Dispose between two callbacks) is not a cache.
        List<RemoteCache> caches = [.. _caches
            .Where(c => c.Value.Active is not null && c.Value.Bytes is not null)
            .Select(c => new RemoteCache(c.Key, c.Value.Active!.Value, c.Value.Total ?? 0, c.Value.Cached ?? 0,
                c.Value.Slabs, c.Value.GracePeriod, c.Value.Bytes!.Value, c.Value.Constructors ?? 0, c.Value.Destructors ?? 0))];
        return new RemoteSnapshot(intervalEnd, KmemMeterSeen, caches,
            _pages.TryGetValue("kmem.pages.memory.held", out long held) ? held : null,
            _pages.TryGetValue("kmem.pages.memory.cached", out long cached) ? cached : null,
            _pages.TryGetValue("kmem.pages.memory.in_use", out long inUse) ? inUse : null,
            _pages.TryGetValue("kmem.kmalloc.large.memory.in_use", out long large) ? large : null);
    }

    /// <summary>
    /// <c>kmem.cache.name=a,b,kmem.slab.state=full</c> → {name: "a,b", state: "full"}: a
    /// comma separates two tags only where a known key and '=' follow it.
    /// </summary>
    internal static Dictionary<string, string> ParseTags(string tags)
    {
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        int start = 0;
        while (start < tags.Length)
        {
            string? key = s_tagKeys.FirstOrDefault(k => string.CompareOrdinal(tags, start, k + "=", 0, k.Length + 1) == 0);
            int valueStart = key is null ? tags.IndexOf('=', start) + 1 : start + key.Length + 1;
            if (valueStart <= start)
                break;   // no '=': not a tag list we know
            int end = valueStart;
            while (true)
            {
                end = tags.IndexOf(',', end);
                if (end < 0 || s_tagKeys.Any(k => string.CompareOrdinal(tags, end + 1, k + "=", 0, k.Length + 1) == 0))
                    break;
                end++;
            }
            if (end < 0)
                end = tags.Length;
            result[key ?? tags[start..(valueStart - 1)]] = tags[valueStart..end];
            start = end + 1;
        }
        return result;
    }

    /// <summary>The aggregator stamps intervals with UtcNow; a parser may hand them back unspecified or local.</summary>
    private static DateTime AsUtc(DateTime time) =>
        time.Kind == DateTimeKind.Local ? time.ToUniversalTime() : DateTime.SpecifyKind(time, DateTimeKind.Utc);

    private static string FirstLine(string? text)
    {
        if (string.IsNullOrEmpty(text))
            return "(no message)";
        int newline = text.IndexOfAny(['\r', '\n']);
        return newline < 0 ? text : text[..newline];
    }

    private sealed class CacheValues
    {
        public long? Active, Total, Cached, Bytes, Constructors, Destructors;
        public long Slabs, GracePeriod;
    }
}
