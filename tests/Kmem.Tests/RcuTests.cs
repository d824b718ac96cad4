using Kmem.Locking;

namespace Kmem.Tests;

/// <summary>
/// Rcu: read-side sections, grace periods, callbacks, Barrier, exiting threads, FreeRcu.
/// Alone, because they count process-wide grace periods and registered readers.
/// </summary>
[Collection(nameof(GlobalStateCollection))]
public unsafe class RcuTests
{
    private static readonly TimeSpan Patience = TimeSpan.FromSeconds(20);

    private static void Within(Action action, string what)
    {
        BackgroundCall t = BackgroundCall.Start(action);
        Assert.True(t.Join(Patience), $"{what} did not return");
    }

    [Fact]
    public void Sections_nest_and_an_unbalanced_unlock_is_refused()
    {
        Assert.False(Rcu.IsReading);
        Rcu.ReadLock();
        Rcu.ReadLock();
        using (Rcu.Read())
            Assert.True(Rcu.IsReading);
        Rcu.ReadUnlock();
        Assert.True(Rcu.IsReading);
        Rcu.ReadUnlock();
        Assert.False(Rcu.IsReading);
        var e = Assert.Throws<InvalidOperationException>(Rcu.ReadUnlock);
        Assert.Contains("without a matching ReadLock", e.Message);
    }

    [Fact]
    public void Synchronize_waits_for_a_reader_that_blocks_inside_its_section()
    {
        using var reader = new HeldReader();
        BackgroundCall sync = BackgroundCall.Start(Rcu.Synchronize);
        // Blocked far longer than any spin, yield or sleep step of the wait.
        Assert.False(sync.Join(TimeSpan.FromMilliseconds(300)), "Synchronize returned while a reader that began before it was still inside");
        Assert.False(reader.Left);
        reader.Leave();
        Assert.True(sync.Join(Patience));
        Assert.True(reader.Left);
    }

    [Fact]
    public void Synchronize_does_not_wait_for_sections_that_begin_after_it()
    {
        using var stop = new CancellationTokenSource();
        long sections = 0;
        var readers = Enumerable.Range(0, 3).Select(_ => new Thread(() =>
        {
            while (!stop.IsCancellationRequested)
            {
                using (Rcu.Read())
                    Interlocked.Increment(ref sections);
            }
        }) { IsBackground = true }).ToList();
        readers.ForEach(t => t.Start());
        try
        {
            SpinWait.SpinUntil(() => Volatile.Read(ref sections) > 1000);
            RcuStatistics before = Rcu.GetStatistics();
            Within(() =>
            {
                for (int i = 0; i < 50; i++)
                    Rcu.Synchronize();
            }, "Synchronize with readers looping");
            Assert.True(Rcu.GetStatistics().GracePeriods + Rcu.GetStatistics().SharedGracePeriods
                >= before.GracePeriods + before.SharedGracePeriods + 50);
        }
        finally
        {
            stop.Cancel();
            readers.ForEach(t => t.Join());
        }
    }

    [Fact]
    public void Waiting_for_a_grace_period_inside_a_section_is_refused()
    {
        using (Rcu.Read())
        {
            Assert.Contains("inside a read-side section", Assert.Throws<InvalidOperationException>(Rcu.Synchronize).Message);
            Assert.Throws<InvalidOperationException>(Rcu.Barrier);
        }
    }

    [Fact]
    public void Waiting_for_a_grace_period_under_a_leaf_lock_is_reported()
    {
        if (!LockValidator.IsEnabled)
            return;
        var leaf = new LeafSpinLock("test_rcu_leaf");
        using (leaf.Scope())
        {
            var e = Assert.Throws<LockValidationException>(Rcu.Synchronize);
            Assert.Contains("test_rcu_leaf", e.Message);
            Assert.Contains("rcu_read_lock", e.Message);
        }
    }

    [Fact]
    public void A_lock_taken_inside_sections_and_held_across_Synchronize_is_an_inversion()
    {
        if (!LockValidator.IsEnabled)
            return;
        var mutex = new KLock("test_rcu_mutex");
        using (Rcu.Read())
        {
            using (mutex.Scope())
            {
            }
        }
        using (mutex.Scope())
        {
            var e = Assert.Throws<LockValidationException>(Rcu.Synchronize);
            Assert.Contains("lock order inversion", e.Message);
            Assert.Contains("test_rcu_mutex", e.Message);
        }
    }

    [Fact]
    public void Callbacks_run_in_order_after_a_grace_period_and_Barrier_waits_for_them()
    {
        var ran = new List<int>();
        using (var reader = new HeldReader())
        {
            for (int i = 0; i < 1000; i++)
            {
                int n = i;
                Rcu.Call(() => ran.Add(n));
            }
            Thread.Sleep(200);
            lock (ran)
                Assert.Empty(ran);   // the reader began before the calls: no grace period yet
            reader.Leave();
        }
        Within(Rcu.Barrier, "Barrier");
        Assert.Equal(Enumerable.Range(0, 1000), ran);
        Assert.Equal(0, Rcu.GetStatistics().CallbacksPending);
    }

    [Fact]
    public void A_callback_may_queue_another_and_its_exception_is_recorded_not_lost()
    {
        long failuresBefore = Rcu.GetStatistics().CallbackFailures;
        int second = 0;
        Rcu.Call(() => Rcu.Call(() => second = 1));
        Rcu.Call(() => throw new InvalidOperationException("callback bug"));
        Rcu.Call(Rcu.Barrier);   // refused inside a callback: it would wait for itself
        Within(Rcu.Barrier, "Barrier");
        Within(Rcu.Barrier, "Barrier");   // the chained callback was queued during the first
        Assert.Equal(1, second);
        Assert.Equal(failuresBefore + 2, Rcu.GetStatistics().CallbackFailures);
        Assert.Contains("from an RCU callback", Rcu.LastFailure!.Message);
    }

    [Fact]
    public void A_thread_that_exits_inside_a_section_does_not_stall_grace_periods()
    {
        long exitedBefore = Rcu.GetStatistics().ExitedReaders;
        var t = new Thread(() => Rcu.ReadLock());   // exits without ReadUnlock
        t.Start();
        t.Join();
        Within(Rcu.Synchronize, "Synchronize after a reader exited inside its section");
        Within(Rcu.Synchronize, "a second Synchronize");
        Assert.True(Rcu.GetStatistics().ExitedReaders > exitedBefore);
    }

    [Fact]
    public void A_thread_that_exits_outside_a_section_is_dropped_by_a_later_sweep()
    {
        long exitedBefore = Rcu.GetStatistics().ExitedReaders;
        var t = new Thread(() =>
        {
            Rcu.ReadLock();
            Rcu.ReadUnlock();
        });
        t.Start();
        t.Join();
        Within(() =>
        {
            for (int i = 0; i < 130; i++)   // two sweep intervals
                Rcu.Synchronize();
        }, "Synchronize");
        Assert.True(Rcu.GetStatistics().ExitedReaders > exitedBefore);
    }

    [Fact]
    public void Cookies_poll_true_only_after_a_full_grace_period()
    {
        long cookie;
        using (var reader = new HeldReader())
        {
            // The reader began before the cookie: no grace period can end while it is inside,
            // whatever the callback thread runs meanwhile.
            cookie = Rcu.GetState();
            Thread.Sleep(50);
            Assert.False(Rcu.PollState(cookie));
            reader.Leave();
        }
        Rcu.Synchronize();
        Assert.True(Rcu.PollState(cookie));
        Rcu.SynchronizeTo(cookie);   // already passed: returns at once
    }

    [Fact]
    public void FreeRcu_frees_only_after_the_readers_that_could_see_the_object()
    {
        using var cache = SlabCache.Create("rcu-freercu", 48, new SlabCacheOptions { Flags = SlabFlags.NoMerge | SlabFlags.ConsistencyChecks });
        void* p = cache.Alloc();
        using (var reader = new HeldReader())
        {
            Kmalloc.FreeRcu(p);
            Thread.Sleep(200);
            Assert.Equal(1, cache.GetStatistics().ActiveObjects);
            reader.Leave();
        }
        Within(Rcu.Barrier, "Barrier");
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
        Kmalloc.FreeRcu(null);   // a no-op
    }

    [Fact]
    public void FreeRcu_of_a_pointer_inside_an_object_is_refused_at_once()
    {
        void* p = Kmalloc.Alloc(64);
        try
        {
            var e = Assert.Throws<SlabUsageException>(() => Kmalloc.FreeRcu((byte*)p + 8));
            Assert.Contains("kmalloc-64", e.Message);
            Assert.Equal((nint)((byte*)p + 8), e.Address);
        }
        finally
        {
            Kmalloc.Free(p);
        }
    }

    [Fact]
    public void A_double_free_through_FreeRcu_is_recorded_when_the_free_runs()
    {
        using var cache = SlabCache.Create("rcu-double", 48, new SlabCacheOptions { Flags = SlabFlags.NoMerge | SlabFlags.ConsistencyChecks });
        void* p = cache.Alloc();
        long failuresBefore = Rcu.GetStatistics().CallbackFailures;
        Kmalloc.FreeRcu(p);
        Kmalloc.FreeRcu(p);
        Within(Rcu.Barrier, "Barrier");
        Assert.Equal(failuresBefore + 1, Rcu.GetStatistics().CallbackFailures);
        Assert.IsType<SlabUsageException>(Rcu.LastFailure);
        Assert.Contains("rcu-double", Rcu.LastFailure!.Message);
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
    }
}
