using System.Collections.Immutable;
using System.Diagnostics;
using Kmem.Slab;

namespace Kmem;

/// <summary>
/// The reclaim thread (the kernel's shrinkers and kswapd, for Kmem): the one thread that
/// frees slabs of caches with a destructor, so destructors never run inside an
/// application's Free. Each pass it
/// <list type="bullet">
/// <item>destructs and frees slabs whose construction failed;</item>
/// <item>frees empty slabs of ctor/dtor caches beyond their reserve;</item>
/// <item>trims a cache idle for <see cref="IdleTrimDelay"/>: drains its sheaves and barn and frees every empty slab;</item>
/// <item>under pressure (the page limit hit, or the GC's memory load at <see cref="MemoryLoadThreshold"/>),
/// trims every cache and runs the registered <see cref="IShrinker"/>s.</item>
/// </list>
/// Destructor calls per pass are bounded by <see cref="DestructorBudget"/>; work left over
/// runs in the next pass, at once, so one cache of millions of objects cannot stall it.
/// </summary>
public static class Reclaim
{
    private const int ShrinkBatch = 128;   // SHRINK_BATCH

    // reclaim_gate: thread start and the pass counters, with Monitor.Wait/PulseAll. Outside
    // the lock order: nothing is taken or called while it is held.
    private static readonly object s_gate = new();
    private static readonly AutoResetEvent s_wake = new(false);
    private static Thread? s_thread;
    private static int s_kicked;
    private static int s_pressureRequested;
    private static long s_passesStarted;
    private static long s_passesCompleted;
    private static ImmutableArray<IShrinker> s_shrinkers = [];

    private static long s_pressurePasses;
    private static long s_idleTrims;
    private static long s_slabsFreed;
    private static long s_shrinkerScans;
    private static long s_shrinkerFreed;
    private static long s_allocationWaits;
    private static long s_allocationWaitTimeouts;
    private static long s_failures;
    private static Exception? s_lastFailure;
    private static int s_rotor;

    /// <summary>Time between passes when nothing asks for one. Default 1 s.</summary>
    public static TimeSpan Interval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>A cache with no slow-path activity for this long is trimmed. Default 5 s.</summary>
    public static TimeSpan IdleTrimDelay { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Destructor calls one pass may make over all caches (at least one slab's worth). Default 65536.</summary>
    public static long DestructorBudget { get; set; } = 65536;

    /// <summary>How long an allocation that hit the page limit waits for a reclaim pass before failing. Default 200 ms.</summary>
    public static TimeSpan AllocationWait { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>
    /// Memory pressure, as a fraction of the GC's high-memory-load threshold
    /// (<see cref="GCMemoryInfo.HighMemoryLoadThresholdBytes"/>): when the machine's memory
    /// load reaches it, each pass is deep. Default 1.0.
    /// </summary>
    public static double MemoryLoadThreshold { get; set; } = 1.0;

    /// <summary>The last exception caught on the reclaim thread (a destructor or shrinker bug), if any.</summary>
    public static Exception? LastFailure => Volatile.Read(ref s_lastFailure);

    /// <summary>True on the reclaim thread itself.</summary>
    public static bool IsReclaimThread => Thread.CurrentThread == s_thread;

    public static ReclaimStatistics GetStatistics() => new(
        Passes: Interlocked.Read(ref s_passesCompleted),
        PressurePasses: Interlocked.Read(ref s_pressurePasses),
        IdleTrims: Interlocked.Read(ref s_idleTrims),
        SlabsFreed: Interlocked.Read(ref s_slabsFreed),
        SlabsAwaitingGracePeriod: SlabCacheRegistry.Snapshot().Sum(c => c.SlabsAwaitingGracePeriod),
        ShrinkerScans: Interlocked.Read(ref s_shrinkerScans),
        ShrinkerObjectsFreed: Interlocked.Read(ref s_shrinkerFreed),
        AllocationWaits: Interlocked.Read(ref s_allocationWaits),
        AllocationWaitTimeouts: Interlocked.Read(ref s_allocationWaitTimeouts),
        Failures: Interlocked.Read(ref s_failures));

    /// <summary>Adds a shrinker; dispose the result to remove it.</summary>
    public static IDisposable RegisterShrinker(IShrinker shrinker)
    {
        ArgumentNullException.ThrowIfNull(shrinker);
        ImmutableInterlocked.Update(ref s_shrinkers, a => a.Add(shrinker));
        EnsureStarted();
        return new Registration(shrinker);
    }

    /// <summary>
    /// Runs a pass now and waits for it: <paramref name="deep"/> trims every cache and runs
    /// the shrinkers, as memory pressure does. Returns false if it did not finish within
    /// <paramref name="timeout"/> (default 10 s). On the reclaim thread itself it returns false at once.
    /// </summary>
    public static bool RunPass(bool deep = false, TimeSpan? timeout = null)
    {
        EnsureStarted();
        if (IsReclaimThread)
            return false;
        if (deep)
            Volatile.Write(ref s_pressureRequested, 1);
        return WaitForNextPass(timeout ?? TimeSpan.FromSeconds(10));
    }

    internal static void EnsureStarted()
    {
        if (Volatile.Read(ref s_thread) != null)
            return;
        lock (s_gate)
        {
            if (s_thread != null)
                return;
            var t = new Thread(Loop) { IsBackground = true, Name = "kmem-reclaim" };
            s_thread = t;
            t.Start();
        }
    }

    /// <summary>Asks for a pass soon (cheap when one is already asked for); never waits.</summary>
    internal static void Kick()
    {
        if (Interlocked.Exchange(ref s_kicked, 1) == 0)
            s_wake.Set();
    }

    /// <summary>
    /// The page limit was hit: ask for a deep pass and wait a bounded time for it, rather
    /// than run destructors on this thread. The caller holds no allocator lock.
    /// </summary>
    internal static void WaitForPressurePass()
    {
        if (s_thread == null || IsReclaimThread)
            return;
        Interlocked.Increment(ref s_allocationWaits);
        Volatile.Write(ref s_pressureRequested, 1);
        if (!WaitForNextPass(AllocationWait))
            Interlocked.Increment(ref s_allocationWaitTimeouts);
    }

    /// <summary>Wakes the thread and waits until a pass that started after this call has finished.</summary>
    private static bool WaitForNextPass(TimeSpan timeout)
    {
        long target;
        lock (s_gate)
            target = s_passesStarted + 1;
        s_wake.Set();
        var clock = Stopwatch.StartNew();
        lock (s_gate)
        {
            while (s_passesCompleted < target)
            {
                TimeSpan left = timeout - clock.Elapsed;
                if (left <= TimeSpan.Zero)
                    return false;
                Monitor.Wait(s_gate, left);
            }
        }
        return true;
    }

    private static void Loop()
    {
        bool more = false;
        while (true)
        {
            if (!more)
                s_wake.WaitOne(Interval);
            Volatile.Write(ref s_kicked, 0);
            long pass;
            lock (s_gate)
                pass = ++s_passesStarted;
            // Read after the pass number is public: a waiter that set the flag before
            // reading that number is served by this pass or the next (WaitForNextPass).
            bool pressure = Interlocked.Exchange(ref s_pressureRequested, 0) != 0 || MemoryLoadHigh();
            try
            {
                more = RunPassNow(pressure);
            }
            catch (Exception e)
            {
                RecordFailure(e);
                more = false;
            }
            lock (s_gate)
            {
                s_passesCompleted = pass;
                Monitor.PulseAll(s_gate);
            }
            if (more)
                Thread.Yield();
        }
    }

    /// <summary>The GC's view of the machine's memory load, as of its last collection (none before the first).</summary>
    private static bool MemoryLoadHigh()
    {
        GCMemoryInfo info = GC.GetGCMemoryInfo();
        return info.HighMemoryLoadThresholdBytes > 0
            && info.MemoryLoadBytes >= info.HighMemoryLoadThresholdBytes * MemoryLoadThreshold;
    }

    /// <summary>One pass over every cache, round-robin from where the last pass stopped.</summary>
    private static bool RunPassNow(bool pressure)
    {
        if (pressure)
            Interlocked.Increment(ref s_pressurePasses);
        // The never-waiting paths' leftovers: their deferred frees, and the page reserve.
        DeferredFrees.Drain();
        if (PageLayer.PageReserve.NeedsRefill)
            PageLayer.PageReserve.Refill();
        List<SlabCacheCore> caches = SlabCacheRegistry.Snapshot();
        long budget = DestructorBudget;
        long now = Stopwatch.GetTimestamp();
        bool more = false;
        bool trimmed = pressure;
        int start = caches.Count == 0 ? 0 : s_rotor++ % caches.Count;
        for (int i = 0; i < caches.Count; i++)
        {
            SlabCacheCore cache = caches[(start + i) % caches.Count];
            ReclaimIdleState idle = cache.IdleState;
            ReclaimMode mode = pressure ? ReclaimMode.Trim : ReclaimMode.Excess;
            long activity = cache.Activity;
            if (activity != idle.LastActivity)
            {
                idle.LastActivity = activity;
                idle.IdleSinceTicks = now;
                idle.Trimmed = false;
            }
            else if (!idle.Trimmed && Stopwatch.GetElapsedTime(idle.IdleSinceTicks, now) >= IdleTrimDelay)
            {
                mode = ReclaimMode.Trim;
            }
            bool cacheMore;
            long freed;
            Exception? failure;
            try
            {
                cacheMore = cache.ReclaimWork(mode, ref budget, out freed, out failure);
            }
            catch (Exception e)
            {
                RecordFailure(e);
                continue;
            }
            if (failure != null)
                RecordFailure(failure);
            Interlocked.Add(ref s_slabsFreed, freed);
            if (mode == ReclaimMode.Trim)
            {
                trimmed = true;
                if (!pressure)
                    Interlocked.Increment(ref s_idleTrims);
                // Our own lock acquisitions are not the application's activity.
                idle.LastActivity = cache.Activity;
                idle.Trimmed = !cacheMore;
            }
            more |= cacheMore;
            if (budget <= 0)
                return true;
        }
        if (pressure)
            RunShrinkers();
        try
        {
            PerCpuAllocator.BalanceWhereNeeded();
        }
        catch (Exception e)
        {
            RecordFailure(e);
        }
        if (trimmed)
            Pages.Trim();
        return more;
    }

    private static void RunShrinkers()
    {
        foreach (IShrinker shrinker in s_shrinkers)
        {
            try
            {
                long toScan = shrinker.CountObjects();
                while (toScan > 0)
                {
                    long batch = Math.Min(ShrinkBatch, toScan);
                    long freed = shrinker.ScanObjects(batch);
                    Interlocked.Increment(ref s_shrinkerScans);
                    if (freed <= 0)
                        break;
                    Interlocked.Add(ref s_shrinkerFreed, freed);
                    toScan -= batch;
                }
            }
            catch (Exception e)
            {
                RecordFailure(new InvalidOperationException($"shrinker '{shrinker.Name}' threw: {e.Message}", e));
            }
        }
    }

    private static void RecordFailure(Exception e)
    {
        Interlocked.Increment(ref s_failures);
        Volatile.Write(ref s_lastFailure, e);
    }

    private sealed class Registration(IShrinker shrinker) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
                ImmutableInterlocked.Update(ref s_shrinkers, a => a.Remove(shrinker));
        }
    }
}
