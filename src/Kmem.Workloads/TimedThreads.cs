using System.Diagnostics;

namespace Kmem.Workloads;

/// <summary>Tells the workers of <see cref="TimedThreads"/> when the time is up.</summary>
public sealed class StopSignal
{
    private volatile bool _requested;

    public bool Requested => _requested;

    internal void Request() => _requested = true;
}

/// <summary>The harness of the throughput workloads: N threads start together, run for a fixed time, and their operations are summed.</summary>
public static class TimedThreads
{
    /// <summary>
    /// Runs <paramref name="body"/> on <paramref name="threads"/> threads released at once,
    /// signals stop after <paramref name="duration"/>, and returns the operations the bodies
    /// report and the seconds from release to stop.
    /// </summary>
    public static (long Operations, double Seconds) Run(int threads, TimeSpan duration, Func<StopSignal, long> body)
    {
        long total = 0;
        var stop = new StopSignal();
        using var start = new Barrier(threads + 1);
        var workers = Enumerable.Range(0, threads).Select(_ => new Thread(() =>
        {
            start.SignalAndWait();
            Interlocked.Add(ref total, body(stop));
        })).ToList();
        workers.ForEach(w => w.Start());
        start.SignalAndWait();
        var sw = Stopwatch.StartNew();
        Thread.Sleep(duration);
        stop.Request();
        workers.ForEach(w => w.Join());
        return (Interlocked.Read(ref total), sw.Elapsed.TotalSeconds);
    }
}
