namespace Kmem.Tests;

/// <summary>The reclaim thread: idle trim, memory pressure, shrinkers, page-limit waits, bounded work.</summary>
[Collection(nameof(GlobalStateCollection))]
public unsafe class ReclaimTests
{
    private static bool Eventually(Func<bool> condition) => SpinWait.SpinUntil(condition, TimeSpan.FromSeconds(20));

    [Fact]
    public void An_idle_cache_gives_its_memory_back_with_nobody_calling_Shrink()
    {
        TimeSpan saved = Reclaim.IdleTrimDelay;
        var t = new LifecycleTracker();
        try
        {
            Reclaim.IdleTrimDelay = TimeSpan.FromMilliseconds(300);
            using var plain = SlabCache.Create("idle-plain", 72, TestOptions.Unmerged);
            using var constructed = SlabCache.Create("idle-ctor", 72, t.Options());
            ReclaimStatistics start = Reclaim.GetStatistics();
            foreach (SlabCache cache in new[] { plain, constructed })
            {
                var objects = Enumerable.Range(0, 100).Select(_ => (nint)cache.Alloc()).ToList();
                objects.ForEach(p => cache.Free((void*)p));   // parked in this thread's sheaf
                Assert.True(cache.GetStatistics().Slabs > 0);
            }
            Assert.True(Eventually(() => plain.GetStatistics().Slabs == 0 && constructed.GetStatistics().Slabs == 0),
                "an idle cache kept its slabs");
            // The thread counts a trim just after the trim: wait for the count as well.
            Assert.True(Eventually(() => Reclaim.GetStatistics().IdleTrims >= start.IdleTrims + 2),
                $"idle trims {start.IdleTrims} -> {Reclaim.GetStatistics().IdleTrims}");
            Assert.Equal(t.Constructed, t.Destructed);
            Assert.All(t.DestructorThreads.Values, name => Assert.StartsWith("kmem-reclaim", name));   // a worker (the first, or one that took over from a stuck one)
            // Still usable after the trim.
            plain.Free(plain.Alloc());
        }
        finally
        {
            Reclaim.IdleTrimDelay = saved;
        }
    }

    [Fact]
    public void Reclaim_counts_an_RCU_slab_when_it_is_freed_not_when_it_starts_waiting()
    {
        int destructed = 0;
        using var cache = SlabCache.Create("reclaim-rcu-count", 512, new SlabCacheOptions
        {
            Flags = SlabFlags.TypesafeByRcu,
            Destructor = _ => Interlocked.Increment(ref destructed),
            MinEmptySlabs = 0,
        });
        int perSlab = cache.GetStatistics().ObjectsPerSlab;
        var objects = Enumerable.Range(0, perSlab * 3).Select(_ => (nint)cache.Alloc()).ToList();
        objects.ForEach(p => cache.Free((void*)p));
        long slabs = cache.GetStatistics().Slabs;
        Assert.True(slabs >= 3);
        Reclaim.RunPass(deep: true, TimeSpan.FromSeconds(20));   // nothing of other caches left for the pass below
        Rcu.Barrier();
        Reclaim.RunPass(deep: true, TimeSpan.FromSeconds(20));
        objects = Enumerable.Range(0, perSlab * 3).Select(_ => (nint)cache.Alloc()).ToList();
        objects.ForEach(p => cache.Free((void*)p));
        slabs = cache.GetStatistics().Slabs;
        int destructedBefore = destructed;
        long freedByReclaimBefore = cache.GetStatistics().SlabsFreedByReclaim;
        ReclaimStatistics before = Reclaim.GetStatistics();
        using (var reader = new HeldReader())
        {
            Assert.True(Reclaim.RunPass(deep: true, TimeSpan.FromSeconds(20)));
            SlabCacheStatistics waiting = cache.GetStatistics();
            Assert.Equal(slabs, waiting.SlabsAwaitingGracePeriod);
            Assert.Equal(freedByReclaimBefore, waiting.SlabsFreedByReclaim);   // nothing freed yet
            Assert.Equal(destructedBefore, destructed);                         // and no destructor run
            ReclaimStatistics mid = Reclaim.GetStatistics();
            Assert.True(mid.SlabsFreed - before.SlabsFreed < slabs, $"the pass counted {mid.SlabsFreed - before.SlabsFreed} slabs freed while {slabs} only began waiting");
            Assert.True(mid.SlabsAwaitingGracePeriod >= slabs);
            reader.Leave();
        }
        Rcu.Barrier();   // the grace period ended and its callback kicked reclaim
        Assert.True(Eventually(() => cache.GetStatistics().SlabsAwaitingGracePeriod == 0 && Reclaim.RunPass()));
        SlabCacheStatistics done = cache.GetStatistics();
        Assert.Equal(freedByReclaimBefore + slabs, done.SlabsFreedByReclaim);   // counted once, when freed
        Assert.Equal(0, done.Slabs);
        Assert.Equal(destructedBefore + slabs * perSlab, destructed);
        Assert.True(Reclaim.GetStatistics().SlabsFreed - before.SlabsFreed >= slabs);
    }

    private sealed class CountingShrinker(long objects) : IShrinker
    {
        public long Remaining = objects;
        public int Scans;
        public string Name => "test-shrinker";
        public long CountObjects() => Remaining;

        public long ScanObjects(long toScan)
        {
            Scans++;
            long n = Math.Min(toScan, Remaining);
            Remaining -= n;
            return n;
        }
    }

    [Fact]
    public void Memory_pressure_trims_every_cache_and_runs_the_shrinkers_in_batches()
    {
        double saved = Reclaim.MemoryLoadThreshold;
        var shrinker = new CountingShrinker(1000);
        using var cache = SlabCache.Create("pressure", 88, TestOptions.Unmerged);
        cache.Free(cache.Alloc());
        using (Reclaim.RegisterShrinker(shrinker))
        {
            long pressure = Reclaim.GetStatistics().PressurePasses;
            try
            {
                GC.Collect();                      // the GC reports memory load as of its last collection
                Reclaim.MemoryLoadThreshold = 0;   // any memory load counts as pressure
                Assert.True(Reclaim.RunPass());
            }
            finally
            {
                Reclaim.MemoryLoadThreshold = saved;
            }
            Assert.True(Reclaim.GetStatistics().PressurePasses > pressure);
        }
        Assert.Equal(0, shrinker.Remaining);
        Assert.True(shrinker.Scans >= 8, $"{shrinker.Scans} scans for 1000 objects in batches of 128");
        Assert.Equal(0, cache.GetStatistics().Slabs);
        // Unregistered: a later deep pass leaves it alone.
        shrinker.Remaining = 5;
        Assert.True(Reclaim.RunPass(deep: true));
        Assert.Equal(5, shrinker.Remaining);
    }

    [Fact]
    public void At_the_page_limit_an_allocation_waits_for_reclaim_instead_of_running_destructors()
    {
        var t = new LifecycleTracker();
        using var holder = SlabCache.Create("limit-holder", 4000, t.Options(minEmptySlabs: 100));
        using var needy = SlabCache.Create("limit-needy", 4000, TestOptions.Unmerged);
        int perSlab = holder.GetStatistics().ObjectsPerSlab;
        var objects = Enumerable.Range(0, perSlab * 3).Select(_ => (nint)holder.Alloc()).ToList();
        objects.ForEach(p => holder.Free((void*)p));   // empty, constructed, kept (reserve 100)
        Assert.True(holder.GetStatistics().Slabs >= 3);
        long waits = Reclaim.GetStatistics().AllocationWaits;
        int me = Environment.CurrentManagedThreadId;
        Pages.Trim();
        try
        {
            Pages.Limit = Pages.BytesHeld + 4096;
            void* p = needy.Alloc();   // no room: the reclaim thread trims 'limit-holder' while we wait
            needy.Free(p);
        }
        finally
        {
            Pages.Limit = 0;
        }
        Assert.True(Reclaim.GetStatistics().AllocationWaits > waits);
        Assert.Equal(0, holder.GetStatistics().Slabs);
        Assert.Equal(t.Constructed, t.Destructed);
        Assert.DoesNotContain(me, t.DestructorThreads.Keys);
    }

    [Fact]
    public void Destructor_work_per_pass_is_bounded()
    {
        long saved = Reclaim.DestructorBudget;
        var t = new LifecycleTracker();
        using var cache = SlabCache.Create("bounded", 4000, t.Options(minEmptySlabs: 0));
        int perSlab = cache.GetStatistics().ObjectsPerSlab;
        try
        {
            Reclaim.DestructorBudget = perSlab;   // one slab's worth per pass
            long passes = Reclaim.GetStatistics().Passes;
            var objects = Enumerable.Range(0, perSlab * 12).Select(_ => (nint)cache.Alloc()).ToList();
            objects.ForEach(p => cache.Free((void*)p));
            Assert.True(Eventually(() => cache.GetStatistics().EmptySlabs == 0), "reclaim never caught up");
            Assert.True(Reclaim.RunPass());   // the pass that freed the last slab is counted when it ends
            SlabCacheStatistics s = cache.GetStatistics();
            Assert.True(s.SlabsFreedByReclaim >= 5, $"{s.SlabsFreedByReclaim} slabs freed by reclaim");
            Assert.True(Reclaim.GetStatistics().Passes - passes >= s.SlabsFreedByReclaim,
                "a pass freed more than its budget");
        }
        finally
        {
            Reclaim.DestructorBudget = saved;
        }
    }

    [Fact]
    public void A_destructor_failure_on_the_reclaim_thread_is_recorded_not_fatal()
    {
        long failures = Reclaim.GetStatistics().Failures;
        using var cache = SlabCache.Create("dtor-throws", 64, new SlabCacheOptions
        {
            Constructor = _ => true,
            Destructor = _ => throw new InvalidDataException("broken destructor"),
            MinEmptySlabs = 0,
        });
        cache.Free(cache.Alloc());
        Assert.True(Reclaim.RunPass(deep: true));
        Assert.True(Reclaim.GetStatistics().Failures > failures);
        Assert.IsType<InvalidDataException>(Reclaim.LastFailure);
        Assert.Equal(0, cache.GetStatistics().Slabs);   // freed regardless
        Assert.True(Reclaim.RunPass());                  // and the thread lives on
    }

    [Fact]
    public void Exited_threads_leave_nothing_in_their_sheaves_and_their_ids_are_recycled()
    {
        using var cache = SlabCache.Create("exited-threads", 64, TestOptions.Unmerged);
        Sheaves.ThreadSlot.FinalizerRecycles = false;   // a GC now must not recycle the ids before the pass
        try
        {
            ExitedThreadsAreReaped(cache);
        }
        finally
        {
            Sheaves.ThreadSlot.FinalizerRecycles = true;
        }
    }

    private static void ExitedThreadsAreReaped(SlabCache cache)
    {
        long reaped = Reclaim.GetStatistics().ExitedThreadsReaped;
        long objects = Reclaim.GetStatistics().ExitedThreadObjects;
        const int Threads = 16, PerThread = 10;
        var ids = new int[Threads];
        var threads = Enumerable.Range(0, Threads).Select(t => new Thread(() =>
        {
            var live = new nint[PerThread];
            for (int i = 0; i < PerThread; i++)
                live[i] = (nint)cache.Alloc();
            foreach (nint p in live)
                cache.Free((void*)p);   // into this thread's sheaf
            ids[t] = Sheaves.ThreadSlot.Id;
        })).ToList();
        threads.ForEach(t => t.Start());
        threads.ForEach(t => t.Join());
        Assert.All(ids, id => Assert.NotEqual(0, id));

        // A normal pass (not a trim, and the cache was just used, so not idle) reaps them.
        Assert.True(Reclaim.RunPass());
        foreach (int id in ids)
            Assert.Equal(0, cache.Core.ObjectsInSheafOf(id));
        var stats = Reclaim.GetStatistics();
        Assert.True(stats.ExitedThreadsReaped - reaped >= Threads, $"{stats.ExitedThreadsReaped - reaped} of {Threads} exited threads reaped");
        Assert.True(stats.ExitedThreadObjects - objects >= Threads * PerThread, $"{stats.ExitedThreadObjects - objects} objects taken back");
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);

        // Their ids are free again: a new thread gets one of them, with an empty sheaf.
        int reused = 0;
        var next = new Thread(() =>
        {
            void* p = cache.Alloc();
            cache.Free(p);
            reused = Sheaves.ThreadSlot.Id;
        });
        next.Start();
        next.Join();
        Assert.Contains(reused, ids);   // a recycled id, not a new one
        Assert.True(Reclaim.RunPass());
        Assert.Equal(0, cache.Core.ObjectsInSheafOf(reused));
    }
}
