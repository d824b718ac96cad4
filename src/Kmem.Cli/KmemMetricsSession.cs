using System.Collections.Concurrent;
using System.Diagnostics.Tracing;
using System.Globalization;
using Microsoft.Diagnostics.NETCore.Client;
using Microsoft.Diagnostics.Tracing;

namespace Kmem.Cli;

/// <summary>What <see cref="KmemMetricsSession.Read"/> came back with.</summary>
internal enum SessionReadKind
{
    /// <summary>A collection: <see cref="SessionRead.Snapshot"/>.</summary>
    Snapshot,

    /// <summary>The target exited; the session is over.</summary>
    TargetExited,

    /// <summary>Nothing within the timeout.</summary>
    TimedOut,

    /// <summary>The token was cancelled (Ctrl+C).</summary>
    Canceled,
}

/// <summary>
/// A read: its kind, the snapshot for <see cref="SessionReadKind.Snapshot"/>, and for
/// <see cref="SessionReadKind.TargetExited"/> what is odd about the exit, if anything.
/// </summary>
internal readonly record struct SessionRead(SessionReadKind Kind, RemoteSnapshot? Snapshot = null, string? Note = null);

/// <summary>
/// An EventPipe session in another .NET process on the runtime's
/// <c>System.Diagnostics.Metrics</c> EventSource, following the Kmem meter's instruments
/// that `kmem top` and `kmem slabinfo -p` show, as dotnet-counters does it: the diagnostics
/// IPC channel (Microsoft.Diagnostics.NETCore.Client) starts the session, TraceEvent's
/// <see cref="EventPipeEventSource"/> parses the stream on a thread of its own, and
/// <see cref="KmemMetricsCollector"/> turns each collection into a <see cref="RemoteSnapshot"/>.
/// </summary>
internal sealed class KmemMetricsSession : IDisposable
{
    /// <summary>The value events' keyword on MetricsEventSource (TimeSeriesValues); it also carries the errors.</summary>
    private const long TimeSeriesValues = 0x2;

    /// <summary>
    /// Far more series than the instruments asked for carry in any real process (about ten
    /// per cache); above it the target reports TimeSeriesLimitReached and leaves caches out.
    /// </summary>
    internal const int MaxTimeSeries = 20_000;

    /// <summary>
    /// How long the target may take to answer the request for a session. It answers in
    /// milliseconds, unless its runtime is stuck: .NET 10.0.12 can deadlock when a
    /// session enables MetricsEventSource just as another thread makes the process's first
    /// use of ArrayPool (dotnet/runtime#119014), and the client library would wait for
    /// the answer forever.
    /// </summary>
    internal static readonly TimeSpan AttachTimeout = TimeSpan.FromSeconds(10);

    /// <summary>How long a Dispose waits for the target to acknowledge the session's stop, for the same reason.</summary>
    private static readonly TimeSpan s_stopTimeout = TimeSpan.FromSeconds(3);

    private readonly KmemMetricsCollector _collector;
    // Not disposed: the reader thread may still add its End to it after a Dispose that
    // gave up waiting for it; it holds no handle until a wait blocks.
    private readonly BlockingCollection<object> _queue = [];
    private readonly EventPipeSession _session;
    private readonly Thread _reader;
    private object? _end;
    private int _disposed;

    private KmemMetricsSession(TargetProcess target, EventPipeSession session, TimeSpan interval, string sessionId)
    {
        _collector = new KmemMetricsCollector(sessionId);
        Target = target;
        Interval = interval;
        _session = session;
        _reader = new Thread(ReadEvents) { IsBackground = true, Name = "kmem-eventpipe" };
    }

    /// <summary>The process read.</summary>
    public TargetProcess Target { get; }

    /// <summary>How often the target collects and sends the values (the RefreshInterval argument).</summary>
    public TimeSpan Interval { get; }

    /// <summary>The last error the target's EventSource reported and went on after, if any.</summary>
    public string? Warning => _collector.Warning;

    /// <summary>
    /// The EventPipe provider for the Kmem meter, with the arguments dotnet-counters gives
    /// MetricsEventSource: a session id of our own (its events carry it), the instruments,
    /// the interval, and the series limits.
    /// </summary>
    internal static EventPipeProvider Provider(string sessionId, TimeSpan interval) =>
        new(KmemMetricsCollector.ProviderName, EventLevel.Informational, TimeSeriesValues,
            new Dictionary<string, string>
            {
                ["SessionId"] = sessionId,
                ["Metrics"] = KmemMetricsCollector.MetricsArgument,
                ["RefreshInterval"] = interval.TotalSeconds.ToString(CultureInfo.InvariantCulture),
                ["MaxTimeSeries"] = MaxTimeSeries.ToString(CultureInfo.InvariantCulture),
                // None of the instruments asked for is a histogram.
                ["MaxHistograms"] = "0",
            });

    /// <summary>
    /// Attaches to process <paramref name="pid"/> and starts the session; the first values
    /// come one <paramref name="interval"/> later. <see cref="TargetProcessException"/> when
    /// there is no such process or its diagnostics channel cannot be opened.
    /// </summary>
    public static KmemMetricsSession Start(int pid, TimeSpan interval)
    {
        TargetProcess target = TargetProcess.Find(pid);
        try
        {
            string sessionId = Guid.NewGuid().ToString();
            var client = new DiagnosticsClient(pid);
            // No rundown (method and module names) and no stacks: only the EventSource's
            // payloads are read, and both would cost the target work at every event.
            var config = new EventPipeSessionConfiguration([Provider(sessionId, interval)],
                circularBufferSizeMB: 16, requestRundown: false, requestStackwalk: false);
            EventPipeSession session;
            using (var answered = new CancellationTokenSource(AttachTimeout))
                session = client.StartEventPipeSessionAsync(config, answered.Token).GetAwaiter().GetResult();
            var result = new KmemMetricsSession(target, session, interval, sessionId);
            result._reader.Start();
            return result;
        }
        catch (OperationCanceledException e)
        {
            string message = $"process {target} did not answer the request for an EventPipe session within {AttachTimeout.TotalSeconds:0} s: "
                + "its runtime is stuck or stopped (.NET 10.0.12 can deadlock when a session starts during the process's start-up, dotnet/runtime#119014)";
            target.Dispose();
            throw new TargetProcessException(message, e);
        }
        catch (Exception e) when (e is ServerNotAvailableException or IOException or UnauthorizedAccessException or TimeoutException)
        {
            string message = target.DescribeAttachFailure(e);
            target.Dispose();
            throw new TargetProcessException(message, e);
        }
        catch (DiagnosticsClientException e)
        {
            string message = $"process {target} refused the EventPipe session: {e.Message}";
            target.Dispose();
            throw new TargetProcessException(message, e);
        }
    }

    /// <summary>
    /// The next collection, waiting up to <paramref name="timeout"/>. Throws
    /// <see cref="TargetProcessException"/> when the session failed: another metrics session
    /// holds the target's EventSource, or the stream ended while the target still runs.
    /// </summary>
    public SessionRead Read(TimeSpan timeout, CancellationToken cancellationToken)
    {
        object? item = _end;
        if (item is null)
        {
            try
            {
                int milliseconds = timeout == System.Threading.Timeout.InfiniteTimeSpan ? -1 : (int)Math.Clamp(timeout.TotalMilliseconds, 0, int.MaxValue);
                if (!_queue.TryTake(out item, milliseconds, cancellationToken))
                    return new SessionRead(SessionReadKind.TimedOut);
            }
            catch (OperationCanceledException)
            {
                return new SessionRead(SessionReadKind.Canceled);
            }
        }
        switch (item)
        {
            case RemoteSnapshot snapshot:
                return new SessionRead(SessionReadKind.Snapshot, snapshot);
            case End end:
                _end = end;
                if (end.Failure is null)
                    return new SessionRead(SessionReadKind.TargetExited, Note: end.Note);
                throw new TargetProcessException(end.Failure, end.Exception!);
            default:
                throw new InvalidOperationException($"unexpected item {item}");
        }
    }

    /// <summary>The reader thread: parses the stream until it ends, then says why it ended.</summary>
    private void ReadEvents()
    {
        Exception? exception = null;
        bool fatalQueued = false;
        try
        {
            using var source = new EventPipeEventSource(_session.EventStream);
            source.Dynamic.All += e =>
            {
                if (e.ProviderName != KmemMetricsCollector.ProviderName)
                    return;
                RemoteSnapshot? snapshot = _collector.OnEvent(e.EventName, name => PayloadOrNull(e, name));
                if (snapshot is not null)
                    _queue.Add(snapshot);
                if (_collector.Fatal is { } fatal && !fatalQueued)
                {
                    // Said now: StopProcessing does not end Process() on a live stream that
                    // keeps bringing the other session's events; our Dispose ends it.
                    fatalQueued = true;
                    _queue.Add(new End(fatal, new InvalidOperationException(fatal)));
                    source.StopProcessing();
                }
            };
            source.Process();
        }
        catch (Exception e) when (Volatile.Read(ref _disposed) == 0)
        {
            // A stream cut short: usually the target dying mid-event (tested below).
            exception = e;
        }
        catch (Exception)
        {
            // Disposing closed the stream under the parser; nobody reads any more.
        }
        if (fatalQueued || Volatile.Read(ref _disposed) != 0)
        {
            _queue.Add(new End(null, null));   // said already, or nobody reads any more
            return;
        }
        if (TargetExitsSoon())
            _queue.Add(new End(null, null));
        else if (exception is null)
            // Nothing but the target's own runtime ends a session cleanly (at shutdown, or on
            // our stop): it is shutting down, and stuck at it.
            _queue.Add(new End(null, null, "closed the session, as a runtime does when it shuts down, but has not exited 5 s later"));
        else
            _queue.Add(new End($"the EventPipe stream from process {Target} broke while it still runs: {exception.Message}", exception));
    }

    /// <summary>
    /// The stream ends a moment before the process is gone: the runtime closes its sessions
    /// during its shutdown, after the ProcessExit handlers, and the rest of it takes some
    /// 10 to 150 ms here, more on a loaded machine. A process still there five seconds later
    /// is stuck in its shutdown (the stream ended cleanly) or its stream broke.
    /// </summary>
    private bool TargetExitsSoon()
    {
        for (int i = 0; i < 100; i++)
        {
            if (Target.HasExited)
                return true;
            Thread.Sleep(50);
        }
        return Target.HasExited;
    }

    private static object? PayloadOrNull(TraceEvent e, string name) =>
        e.PayloadIndex(name) >= 0 ? e.PayloadByName(name) : null;

    /// <summary>Stops the session in the target (it stops aggregating at once) and the reader thread.</summary>
    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0)
            return;
        if (_reader.IsAlive)
        {
            try
            {
                // The runtime flushes and closes the stream, so the parser returns by itself.
                using var stopped = new CancellationTokenSource(s_stopTimeout);
                _session.StopAsync(stopped.Token).GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is ServerNotAvailableException or IOException or DiagnosticsClientException or TimeoutException)
            {
                // The target is gone: its end of the stream is closed already.
            }
            catch (OperationCanceledException)
            {
                // The target is stuck; disposing the session below closes our end.
            }
            _reader.Join(TimeSpan.FromSeconds(5));
        }
        _session.Dispose();
        _reader.Join(TimeSpan.FromSeconds(2));
        Target.Dispose();
    }

    /// <summary>
    /// The session is over: the target exited (<see cref="Failure"/> null; <see cref="Note"/>
    /// when it ended the session but is still there) or the session failed.
    /// </summary>
    private sealed record End(string? Failure, Exception? Exception, string? Note = null);
}
