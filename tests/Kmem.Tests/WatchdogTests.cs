using System.Collections.Concurrent;
using System.Diagnostics;
using Kmem.Diagnostics;

namespace Kmem.Tests;

/// <summary>
/// The watchdog over the callbacks Kmem runs on its own threads (issue 19 item 1): a
/// destructor, shrinker or RCU callback that blocks is reported within its budget, and
/// reclaim of everything else goes on around it.
/// </summary>
[Collection(nameof(GlobalStateCollection))]
public sealed unsafe class WatchdogTests : IDisposable
{
    private static readonly TimeSpan Budget = TimeSpan.FromMilliseconds(200);
    private readonly TimeSpan _savedBudget = Reclaim.StallBudget;
    private readonly ConcurrentQueue<SlabReport> _stalls = new();
    private readonly ManualResetEventSlim _release = new(false);
    private readonly ManualResetEventSlim _entered = new(false);

    public WatchdogTests()
    {
        Reclaim.StallBudget = Budget;
        SlabReports.Reported += OnReport;
    }

    public void Dispose()
    {
        _release.Set();   // never leave a worker stuck for the next test
        Assert.True(SpinWait.SpinUntil(() => Reclaim.GetStatistics().StalledWorkers == 0, TimeSpan.FromSeconds(20)), "a stuck worker did not exit once released");
        SlabReports.Reported -= OnReport;
        Reclaim.StallBudget = _savedBudget;
    }

    private void OnReport(SlabReport r)
    {
        if (r.Kind == SlabReportKind.CallbackStall)
            _stalls.Enqueue(r);
    }

    /// <summary>The first stall report naming <paramref name="target"/>, waiting for it up to 10 s.</summary>
    private SlabReport WaitForStall(string target)
    {
        SlabReport? found = null;
        Assert.True(SpinWait.SpinUntil(() => (found = _stalls.FirstOrDefault(r => r.CacheName.Contains(target, StringComparison.Ordinal))) != null, TimeSpan.FromSeconds(10)),
            $"no stall reported for '{target}'");
        return found!;
    }

    [Fact]
    public void A_blocking_destructor_is_reported_within_its_budget_and_other_caches_keep_being_reclaimed()
    {
        nint blockedOn = 0;
        var stuck = SlabCache.Create("watchdog-stuck", 64, new SlabCacheOptions
        {
            Flags = SlabFlags.NoMerge,
            // Blocks on an event: invisible to the lock validator, as a lock statement or I/O is.
            Destructor = o =>
            {
                if (Interlocked.CompareExchange(ref blockedOn, (nint)o, 0) == 0)
                {
                    _entered.Set();
                    _release.Wait();
                }
            },
        });
        var other = SlabCache.Create("watchdog-other", 64, new SlabCacheOptions { Flags = SlabFlags.NoMerge, Destructor = _ => { } });
        // Released before the caches are disposed, even when an assertion fails: Dispose
        // would wait for the stuck worker's sheaf_drain.
        try
        {
            BlockingDestructor(stuck, other, () => blockedOn);
        }
        finally
        {
            _release.Set();
            stuck.Dispose();
            other.Dispose();
        }
    }

    private void BlockingDestructor(SlabCache stuck, SlabCache other, Func<nint> blockedOn)
    {
        ReclaimStatistics before = Reclaim.GetStatistics();
        stuck.Free(stuck.Alloc());

        // A deep pass trims every cache: the worker enters the stuck destructor.
        _ = Task.Run(() => Reclaim.RunPass(deep: true));
        Assert.True(_entered.Wait(TimeSpan.FromSeconds(20)), "the reclaim worker never ran the destructor");
        var sinceEntered = Stopwatch.StartNew();
        SlabReport report = WaitForStall("watchdog-stuck");
        TimeSpan reportedAfter = sinceEntered.Elapsed;

        Assert.Equal("watchdog-stuck", report.CacheName);
        Assert.Equal(blockedOn(), report.Address);
        Assert.True(report.Elapsed >= Budget, $"reported after {report.Elapsed}, before the budget");
        // Sampling every budget/4 reports it by about 1.5 budgets; the bound leaves room for a loaded machine.
        Assert.True(reportedAfter < Budget * 25, $"reported {reportedAfter} after the destructor blocked");
        Assert.Contains("sheaf_drain of cache 'watchdog-stuck'", report.Message, StringComparison.Ordinal);
        Assert.Contains("WaitSleepJoin", report.Message, StringComparison.Ordinal);
        Assert.Contains("took over", report.Message, StringComparison.Ordinal);
        Assert.Single(_stalls, r => r.CacheName == "watchdog-stuck");   // once per call, not once per tick
        Assert.Equal(1, stuck.GetStatistics().DestructorStalls);
        ReclaimStatistics during = Reclaim.GetStatistics();
        Assert.True(during.CallbackStalls > before.CallbackStalls);
        Assert.Equal(1, during.StalledWorkers);

        // Reclaim goes on: the other cache's empty slab is freed by the worker that took over,
        // which skips the stuck cache (its sheaf_drain is held by the stuck worker).
        other.Free(other.Alloc());
        Assert.Equal(1, other.GetStatistics().Slabs);
        Assert.True(Reclaim.RunPass(deep: true, TimeSpan.FromSeconds(20)), "no reclaim pass completed while one destructor is stuck");
        Assert.True(SpinWait.SpinUntil(() => other.GetStatistics().Slabs == 0, TimeSpan.FromSeconds(20)), "the other cache was not reclaimed");
        Assert.True(other.GetStatistics().SlabsFreedByReclaim >= 1);
        Assert.True(Reclaim.GetStatistics().CachesSkippedBusy > before.CachesSkippedBusy, "the stuck cache was not skipped");
        // Off the cache's lists, but not freed until its destructors have run: not counted freed yet.
        Assert.Equal(0, stuck.GetStatistics().SlabsFreed);

        // Released, the stuck worker finishes its slab and leaves; nothing was lost.
        _release.Set();
        Assert.True(SpinWait.SpinUntil(() => Reclaim.GetStatistics().StalledWorkers == 0, TimeSpan.FromSeconds(20)), "the stuck worker did not exit");
        SlabCacheStatistics s = stuck.GetStatistics();
        Assert.Equal(0, s.Slabs);
        Assert.True(SpinWait.SpinUntil(() => stuck.GetStatistics().SlabsFreed == 1, TimeSpan.FromSeconds(20)), "the stuck slab was never freed");
        s = stuck.GetStatistics();
        Assert.Equal(s.ObjectsPerSlab, s.DestructorCalls);
        Assert.Equal(0, s.ActiveObjects);
    }

    [Fact]
    public void A_blocking_shrinker_is_reported_and_skipped_while_it_runs()
    {
        var shrinker = new BlockingShrinker("watchdog-shrinker", _entered, _release);
        using IDisposable registration = Reclaim.RegisterShrinker(shrinker);
        ReclaimStatistics before = Reclaim.GetStatistics();
        _ = Task.Run(() => Reclaim.RunPass(deep: true));
        Assert.True(_entered.Wait(TimeSpan.FromSeconds(20)), "the shrinker never ran");
        SlabReport report = WaitForStall("watchdog-shrinker");
        Assert.Contains("shrinker 'watchdog-shrinker'", report.Message, StringComparison.Ordinal);
        Assert.True(report.Elapsed >= Budget);

        // The next deep pass completes, and does not call the stuck shrinker a second time.
        Assert.True(Reclaim.RunPass(deep: true, TimeSpan.FromSeconds(20)), "no pass completed while the shrinker is stuck");
        Assert.True(Reclaim.GetStatistics().ShrinkersSkippedBusy > before.ShrinkersSkippedBusy);
        Assert.Equal(1, shrinker.Calls);
        _release.Set();
        Assert.True(SpinWait.SpinUntil(() => Reclaim.GetStatistics().StalledWorkers == 0, TimeSpan.FromSeconds(20)));
    }

    [Fact]
    public void A_blocking_RCU_callback_is_reported_and_the_callbacks_behind_it_run_once_it_returns()
    {
        int later = 0;
        Rcu.Call(BlockingCallback);
        Rcu.Call(() => Interlocked.Increment(ref later));
        Assert.True(_entered.Wait(TimeSpan.FromSeconds(20)), "the callback never ran");
        SlabReport report = WaitForStall(nameof(BlockingCallback));
        Assert.Contains("RCU callback", report.Message, StringComparison.Ordinal);
        Assert.Contains("in order", report.Message, StringComparison.Ordinal);
        Assert.Equal(0, Volatile.Read(ref later));
        _release.Set();
        Rcu.Barrier();
        Assert.Equal(1, later);
    }

    private void BlockingCallback()
    {
        _entered.Set();
        _release.Wait();
    }

    [Fact]
    public void The_lifecycle_check_with_a_timeout_fails_a_blocking_destructor_by_name_and_passes_a_good_one()
    {
        var blocking = SlabCache.Create("check-blocking", 64, new SlabCacheOptions
        {
            Flags = SlabFlags.NoMerge,
            Constructor = _ => true,
            Destructor = _ => _release.Wait(),
        });
        try
        {
            LifecycleCheckTimeout(blocking);
        }
        finally
        {
            _release.Set();
            blocking.Dispose();
        }
    }

    private void LifecycleCheckTimeout(SlabCache blocking)
    {
        using var good = SlabCache.Create("check-good", 64, new SlabCacheOptions { Flags = SlabFlags.NoMerge, Destructor = _ => { } });
        LifecycleCheckResult bad = LifecycleCheck.Run(blocking, TimeSpan.FromMilliseconds(300));
        TimeoutException e = Assert.IsType<TimeoutException>(bad.Failure);
        Assert.Contains("cache 'check-blocking'", e.Message, StringComparison.Ordinal);
        Assert.True(LifecycleCheck.Run(good, TimeSpan.FromSeconds(20)).Passed);
        _release.Set();
        // Released, the cycle finishes: every constructed object was destructed, and the slab freed.
        Assert.True(SpinWait.SpinUntil(() => blocking.GetStatistics() is { SlabsFreed: 1 } s && s.DestructorCalls == s.ConstructedObjects, TimeSpan.FromSeconds(20)),
            $"destructed {blocking.GetStatistics().DestructorCalls} of {blocking.GetStatistics().ConstructedObjects}");
        Assert.Equal(0, blocking.GetStatistics().Slabs);
    }

    [Fact]
    public void A_destructor_that_takes_a_non_leaf_lock_is_refused_whatever_the_build()
    {
        // The leaf-only check is a thread-static counter read by every KLock acquisition,
        // outside the LockValidator.Enabled switch: Release builds refuse it as well.
        var mutex = new Kmem.Locking.KLock("watchdog_test_mutex");
        using var cache = SlabCache.Create("leaf-only-always", 64, new SlabCacheOptions
        {
            Flags = SlabFlags.NoMerge,
            Destructor = _ => { using (mutex.Scope()) { } },
        });
        LifecycleCheckResult r = LifecycleCheck.Run(cache, TimeSpan.FromSeconds(20));
        var e = Assert.IsType<Kmem.Locking.LockValidationException>(r.Failure);
        Assert.Contains("watchdog_test_mutex", e.Message, StringComparison.Ordinal);
        Assert.Contains("destructor of cache 'leaf-only-always'", e.Message, StringComparison.Ordinal);
        Assert.Equal(0, mutex.Acquired);
    }

    private sealed class BlockingShrinker(string name, ManualResetEventSlim entered, ManualResetEventSlim release) : IShrinker
    {
        private int _calls;

        public string Name => name;

        public int Calls => Volatile.Read(ref _calls);

        public long CountObjects() => 1;

        public long ScanObjects(long toScan)
        {
            Interlocked.Increment(ref _calls);
            entered.Set();
            release.Wait();
            return 0;
        }
    }
}
