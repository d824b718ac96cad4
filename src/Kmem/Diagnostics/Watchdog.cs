using System.Collections.Immutable;
using System.Diagnostics;

namespace Kmem.Diagnostics;

/// <summary>
/// The hung-callback detector (the kernel's soft-lockup and hung-task detectors, for the
/// user code Kmem runs on its own threads): every quarter of <see cref="Reclaim.StallBudget"/>
/// it samples each <see cref="CallbackWatch"/>; a callback whose progress has not moved
/// for the budget is reported once, through <see cref="SlabReports"/>
/// (<see cref="SlabReportKind.CallbackStall"/>) and the statistics, and the watch's
/// <see cref="CallbackWatch.OnStall"/> runs (the reclaim thread hands its work to a new
/// worker). Its thread, "kmem-watchdog", takes no allocator lock.
/// </summary>
internal static class Watchdog
{
    private static ImmutableArray<CallbackWatch> s_watches = [];
    private static readonly Lock s_startGate = new();   // thread start only; outside the lock order
    private static Thread? s_thread;
    private static long s_stalls;

    /// <summary>Stalls reported since start.</summary>
    internal static long Stalls => Interlocked.Read(ref s_stalls);

    /// <summary>Starts watching <paramref name="watch"/> (and the watchdog thread, the first time).</summary>
    internal static void Watch(CallbackWatch watch)
    {
        ImmutableInterlocked.Update(ref s_watches, a => a.Add(watch));
        if (Volatile.Read(ref s_thread) != null)
            return;
        lock (s_startGate)
        {
            if (s_thread != null)
                return;
            var t = new Thread(Loop) { IsBackground = true, Name = "kmem-watchdog" };
            Volatile.Write(ref s_thread, t);
            t.Start();
        }
    }

    /// <summary>
    /// Forgets what was reported, so that a call still stuck is reported (and acted on)
    /// again: a stuck worker exited, and the cap on stuck workers may have room now.
    /// </summary>
    internal static void Rearm()
    {
        foreach (CallbackWatch w in s_watches)
            w.ReportedProgress = -1;
    }

    /// <summary>Stops watching (a worker that exits).</summary>
    internal static void Unwatch(CallbackWatch watch) => ImmutableInterlocked.Update(ref s_watches, a => a.Remove(watch));

    private static TimeSpan Tick()
    {
        long ms = (long)Reclaim.StallBudget.TotalMilliseconds / 4;
        return TimeSpan.FromMilliseconds(Math.Clamp(ms, 5, 1000));
    }

    private static void Loop()
    {
        while (true)
        {
            Thread.Sleep(Tick());
            try
            {
                Sample();
            }
            catch (Exception e)
            {
                // A bug here must not end the watching; it is counted as reclaim's.
                Reclaim.RecordFailure(e);
            }
        }
    }

    private static void Sample()
    {
        long now = Stopwatch.GetTimestamp();
        TimeSpan budget = Reclaim.StallBudget;
        foreach (CallbackWatch w in s_watches)
        {
            long p = w.Progress;
            if (p != w.SeenProgress)
            {
                w.SeenProgress = p;
                w.SeenSinceTicks = now;
                continue;
            }
            if ((p & 1) == 0 || w.ReportedProgress == p)
                continue;
            TimeSpan stuck = Stopwatch.GetElapsedTime(w.SeenSinceTicks, now);
            if (stuck < budget || !w.TryReadCall(p, out StalledCall call))
                continue;
            w.ReportedProgress = p;
            Report(w, call, stuck);
        }
    }

    private static void Report(CallbackWatch w, StalledCall call, TimeSpan stuck)
    {
        Interlocked.Increment(ref s_stalls);
        call.Cache?.CountDestructorStall();
        string what = call.Kind switch
        {
            CallbackKind.Destructor => call.Count > 1
                ? $"the batch destructor of cache '{call.Target}' on {call.Count} objects from 0x{call.Object:x}"
                : $"the destructor of cache '{call.Target}' on object 0x{call.Object:x}",
            CallbackKind.Shrinker => $"shrinker '{call.Target}'",
            _ => $"RCU callback {call.Target}",
        };
        string action = w.OnStall?.Invoke(w) ?? "nothing else waits on it";
        string holding = call.Holding.Length == 0 ? "no Kmem lock" : call.Holding;
        string message =
            $"{what} has run for at least {stuck.TotalMilliseconds:F0} ms (budget {Reclaim.StallBudget.TotalMilliseconds:F0} ms) " +
            $"on {w.Role} (thread '{w.Thread.Name}', state {w.Thread.ThreadState}, holding {holding}): " +
            $"it blocks or spins (a lock, a wait or I/O Kmem's lock validator cannot see); {action}";
        SlabReports.Publish(new SlabReport(SlabReportKind.CallbackStall, call.Target, call.Object, message,
            call.Object == 0 ? [] : [call.Object], Math.Max(1, call.Count), stuck));
    }
}
