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
/// <remarks>
/// A destructor or shrinker that blocks cannot stall it either. The thread is a worker
/// ("kmem-reclaim"), watched by the <see cref="Diagnostics.Watchdog"/>: a callback that runs
/// past <see cref="StallBudget"/> is reported, and a new worker takes over the loop while
/// the stuck one stays in its callback (at most <see cref="MaxStalledWorkers"/> of them).
/// The new worker skips the stuck cache, whose sheaf_drain the stuck worker holds
/// (<see cref="SlabCacheCore.ReclaimWork"/> only tries it), and the stuck shrinker, which is
/// marked running. A stuck worker whose callback returns finishes that cache and exits.
/// </remarks>
public static class Reclaim
{
    private const int ShrinkBatch = 128;   // SHRINK_BATCH

    /// <summary>Workers left stuck in a callback at once; past this, a stall is reported but no worker is started.</summary>
    public const int MaxStalledWorkers = 4;

    // reclaim_gate: worker start and hand-over, and the pass counters, with
    // Monitor.Wait/PulseAll. Outside the lock order: nothing is taken or called while it is held.
    private static readonly object s_gate = new();
    private static readonly AutoResetEvent s_wake = new(false);
    /// <summary>The worker that runs the loop now (under reclaim_gate; read racily by the worker to see it was replaced).</summary>
    private static Thread? s_thread;
    /// <summary>Workers replaced while stuck and not exited yet (under reclaim_gate).</summary>
    private static int s_stalledWorkers;
    private static int s_workersStarted;
    [ThreadStatic] private static bool t_isWorker;
    private static int s_kicked;
    private static int s_pressureRequested;
    private static long s_passesStarted;
    private static long s_passesCompleted;
    private static ImmutableArray<ShrinkerEntry> s_shrinkers = [];

    private static long s_pressurePasses;
    private static long s_idleTrims;
    private static long s_exitedThreadsReaped;
    private static long s_exitedThreadObjects;
    private static long s_slabsFreed;
    private static long s_shrinkerScans;
    private static long s_shrinkerFreed;
    private static long s_allocationWaits;
    private static long s_allocationWaitTimeouts;
    private static long s_failures;
    private static long s_cachesSkippedBusy;
    private static long s_shrinkersSkippedBusy;
    private static Exception? s_lastFailure;
    private static int s_rotor;

    /// <summary>Time between passes when nothing asks for one. Default 1 s.</summary>
    public static TimeSpan Interval { get; set; } = TimeSpan.FromSeconds(1);

    /// <summary>A cache with no slow-path activity for this long is trimmed. Default 5 s.</summary>
    public static TimeSpan IdleTrimDelay { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Destructor calls one pass may make over all caches (at least one slab's worth). Default 65536.</summary>
    public static long DestructorBudget { get; set; } = 65536;

    /// <summary>
    /// How long a destructor, shrinker or RCU callback on a Kmem thread may run before the
    /// watchdog reports it and reclaim goes on without it. Default 1 s (the kernel's soft
    /// lockup threshold is 20 s, but a destructor is a few frees).
    /// </summary>
    public static TimeSpan StallBudget
    {
        get => TimeSpan.FromTicks(Volatile.Read(ref s_stallBudgetTicks));
        set
        {
            ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(value, TimeSpan.Zero);
            Volatile.Write(ref s_stallBudgetTicks, value.Ticks);
        }
    }

    private static long s_stallBudgetTicks = TimeSpan.FromSeconds(1).Ticks;

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

    /// <summary>True on a reclaim worker (the one running the loop, or one replaced while stuck).</summary>
    public static bool IsReclaimThread => t_isWorker;

    /// <summary>The counts so far; takes no lock (the caches are walked without slab_mutex, which a Dispose stuck in a destructor holds).</summary>
    public static ReclaimStatistics GetStatistics() => new(
        Passes: Interlocked.Read(ref s_passesCompleted),
        PressurePasses: Interlocked.Read(ref s_pressurePasses),
        IdleTrims: Interlocked.Read(ref s_idleTrims),
        SlabsFreed: Interlocked.Read(ref s_slabsFreed),
        SlabsAwaitingGracePeriod: SlabCacheRegistry.SnapshotUnlocked().Where(c => !c.IsDisposed).Sum(c => c.SlabsAwaitingGracePeriod),
        ShrinkerScans: Interlocked.Read(ref s_shrinkerScans),
        ShrinkerObjectsFreed: Interlocked.Read(ref s_shrinkerFreed),
        AllocationWaits: Interlocked.Read(ref s_allocationWaits),
        AllocationWaitTimeouts: Interlocked.Read(ref s_allocationWaitTimeouts),
        Failures: Interlocked.Read(ref s_failures),
        CallbackStalls: Diagnostics.Watchdog.Stalls,
        StalledWorkers: Volatile.Read(ref s_stalledWorkers),
        CachesSkippedBusy: Interlocked.Read(ref s_cachesSkippedBusy),
        ShrinkersSkippedBusy: Interlocked.Read(ref s_shrinkersSkippedBusy),
        ExitedThreadsReaped: Interlocked.Read(ref s_exitedThreadsReaped),
        ExitedThreadObjects: Interlocked.Read(ref s_exitedThreadObjects));

    /// <summary>Adds a shrinker; dispose the result to remove it.</summary>
    public static IDisposable RegisterShrinker(IShrinker shrinker)
    {
        ArgumentNullException.ThrowIfNull(shrinker);
        var entry = new ShrinkerEntry(shrinker);
        ImmutableInterlocked.Update(ref s_shrinkers, a => a.Add(entry));
        EnsureStarted();
        return new Registration(entry);
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
            StartWorkerLocked();
        }
    }

    /// <summary>Starts a worker and makes it the one running the loop. Caller holds reclaim_gate.</summary>
    private static void StartWorkerLocked()
    {
        Debug.Assert(Monitor.IsEntered(s_gate));
        int n = ++s_workersStarted;
        var t = new Thread(Loop) { IsBackground = true, Name = n == 1 ? "kmem-reclaim" : $"kmem-reclaim-{n}" };
        Volatile.Write(ref s_thread, t);
        t.Start();
    }

    /// <summary>
    /// The watchdog found <paramref name="watch"/>'s worker stuck in a callback (on the
    /// watchdog's thread): if it is the one running the loop, a new worker takes over.
    /// Returns what was done, for the report.
    /// </summary>
    private static string WorkerStalled(Diagnostics.CallbackWatch watch)
    {
        lock (s_gate)
        {
            if (s_thread != watch.Thread)
                return "it was replaced before; the running worker goes on";
            if (s_stalledWorkers >= MaxStalledWorkers)
                return $"{s_stalledWorkers} workers are stuck already (MaxStalledWorkers), so no new worker was started: reclaim waits for this one (reported again when a stuck worker exits)";
            s_stalledWorkers++;
            try
            {
                StartWorkerLocked();
            }
            catch (Exception e) when (e is OutOfMemoryException or ThreadStartException)
            {
                // No thread to be had: this worker stays the one (its pass goes on when it returns).
                s_stalledWorkers--;
                Volatile.Write(ref s_thread, watch.Thread);
                return $"no new worker could be started ({e.Message}): reclaim waits for this one";
            }
            // The stuck pass may have been a deep one that a waiter asked for: the new
            // worker's first pass is deep, so no waiter is released by a shallow one.
            Volatile.Write(ref s_pressureRequested, 1);
            Monitor.PulseAll(s_gate);
        }
        s_wake.Set();
        return $"a new reclaim worker ('{Volatile.Read(ref s_thread)!.Name}') took over and skips what this one holds";
    }

    /// <summary>True while this worker is the one running the loop (a racy read: a stale answer costs at most one more cache).</summary>
    private static bool IsRunningWorker => Volatile.Read(ref s_thread) == Thread.CurrentThread;

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
        if (Volatile.Read(ref s_thread) == null || IsReclaimThread)
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
        t_isWorker = true;
        var watch = new Diagnostics.CallbackWatch(Thread.CurrentThread, "a reclaim worker") { OnStall = WorkerStalled };
        Diagnostics.CallbackWatch.t_current = watch;
        Diagnostics.Watchdog.Watch(watch);
        bool more = false;
        while (IsRunningWorker)
        {
            if (!more)
                s_wake.WaitOne(Interval);
            if (!IsRunningWorker)
                break;
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
                // A replaced worker finishing late must not move the count back.
                s_passesCompleted = Math.Max(s_passesCompleted, pass);
                Monitor.PulseAll(s_gate);
            }
            if (more)
                Thread.Yield();
        }
        // Replaced while stuck in a callback, which has now returned: leave.
        Diagnostics.Watchdog.Unwatch(watch);
        lock (s_gate)
            s_stalledWorkers--;
        Diagnostics.Watchdog.Rearm();
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
        // Before the snapshot: a cache an exited thread used was created before it exited.
        List<(int Id, int Generation)> exited;
        try
        {
            exited = Sheaves.ThreadSlot.DeadIds();
        }
        catch (Exception e)
        {
            RecordFailure(e);   // never the end of reclaim: the pass goes on without reaping
            exited = [];
        }
        List<SlabCacheCore> caches = SlabCacheRegistry.Snapshot();
        if (exited.Count > 0 && !ReapExitedThreads(exited, caches))
            return false;   // replaced while in a cache: the new worker runs the passes
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
            ReclaimOutcome outcome;
            try
            {
                outcome = cache.ReclaimWork(mode, ref budget);
            }
            catch (Exception e)
            {
                RecordFailure(e);
                continue;
            }
            if (!IsRunningWorker)
                return false;   // replaced while in this cache: the new worker runs the passes
            if (outcome.Busy)
            {
                // Its drainer (a Shrink, a Dispose, a stuck worker) does the work or holds it:
                // try again next pass, and leave the idle bookkeeping as it is.
                Interlocked.Increment(ref s_cachesSkippedBusy);
                continue;
            }
            bool cacheMore = outcome.More;
            if (outcome.Failure != null)
                RecordFailure(outcome.Failure);
            Interlocked.Add(ref s_slabsFreed, outcome.FreedSlabs);
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
        if (!IsRunningWorker)
            return false;
        try
        {
            PerCpuAllocator.BalanceWhereNeeded();
        }
        catch (Exception e)
        {
            RecordFailure(e);
        }
        // Free pages go back to the OS: all of them after a trim, else those past the delay.
        if (trimmed)
            Pages.Trim();
        else
            Pages.PurgeExpired();
        return more;
    }

    /// <summary>
    /// Threads that leave nothing behind: the sheaves of exited threads are drained in
    /// every cache, and only when every cache has been drained (none had its sheaf_drain
    /// held) are their ids recycled, so the next thread to get an id starts with empty
    /// sheaves. A busy cache defers the ids to the next pass. False when this worker was
    /// replaced meanwhile.
    /// </summary>
    private static bool ReapExitedThreads(List<(int Id, int Generation)> exited, List<SlabCacheCore> caches)
    {
        var ids = new HashSet<int>(exited.Count);
        foreach (var (id, _) in exited)
            ids.Add(id);
        bool everyCache = true;
        foreach (SlabCacheCore cache in caches)
        {
            try
            {
                if (!cache.DrainExitedThreads(ids, out long drained, out Exception? failure))
                {
                    Interlocked.Increment(ref s_cachesSkippedBusy);
                    everyCache = false;
                }
                Interlocked.Add(ref s_exitedThreadObjects, drained);
                if (failure != null)
                    RecordFailure(failure);
            }
            catch (Exception e)
            {
                RecordFailure(e);
                everyCache = false;
            }
            if (!IsRunningWorker)
                return false;
        }
        if (everyCache)
        {
            try
            {
                RecycleReaped(exited, ids);
            }
            catch (Exception e)
            {
                RecordFailure(e);
            }
        }
        return true;
    }

    /// <summary>Recycles the drained ids; an id found busy (removed from <paramref name="ids"/>) is quarantined.</summary>
    private static void RecycleReaped(List<(int Id, int Generation)> exited, HashSet<int> ids)
    {
        foreach (var (id, generation) in exited)
        {
            // Found busy: died inside its sheaf, so out of circulation for good (a no-op
            // if the finalizer recycled the id meanwhile and a live owner was inside).
            if (!ids.Contains(id))
                Sheaves.ThreadSlot.Quarantine(id, generation);
            else if (Sheaves.ThreadSlot.Recycle(id, generation))
                Interlocked.Increment(ref s_exitedThreadsReaped);
        }
    }

    private static void RunShrinkers()
    {
        Diagnostics.CallbackWatch? watch = Diagnostics.CallbackWatch.t_current;
        foreach (ShrinkerEntry entry in s_shrinkers)
        {
            // A shrinker still running on a stuck worker is skipped, not called twice at once.
            if (Interlocked.CompareExchange(ref entry.Running, 1, 0) != 0)
            {
                Interlocked.Increment(ref s_shrinkersSkippedBusy);
                continue;
            }
            IShrinker shrinker = entry.Shrinker;
            watch?.Enter(Diagnostics.CallbackKind.Shrinker, shrinker.Name, null, 0, 0, "");
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
            finally
            {
                watch?.Exit();
                Volatile.Write(ref entry.Running, 0);
            }
            if (!IsRunningWorker)
                return;
        }
    }

    internal static void RecordFailure(Exception e)
    {
        Interlocked.Increment(ref s_failures);
        Volatile.Write(ref s_lastFailure, e);
    }

    /// <summary>A registered shrinker and whether a worker is inside it now.</summary>
    private sealed class ShrinkerEntry(IShrinker shrinker)
    {
        public IShrinker Shrinker { get; } = shrinker;
        /// <summary>1 while a worker runs it: set and cleared by that worker with atomics.</summary>
        public int Running;
    }

    private sealed class Registration(ShrinkerEntry entry) : IDisposable
    {
        private int _disposed;

        public void Dispose()
        {
            if (Interlocked.Exchange(ref _disposed, 1) == 0)
                ImmutableInterlocked.Update(ref s_shrinkers, a => a.Remove(entry));
        }
    }
}
