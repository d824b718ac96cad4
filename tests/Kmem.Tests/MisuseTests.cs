using Kmem.Locking;

namespace Kmem.Tests;

/// <summary>
/// Each misuse of issue 12's table, with a witness: an object of someone else's that must
/// come out of it untouched, and the allocator's counts that must stay true.
/// </summary>
public unsafe class MisuseTests
{
    /// <summary>A live allocation filled with a pattern, to show a misuse corrupted nobody else.</summary>
    private sealed class Witness : IDisposable
    {
        private readonly byte* _p;
        private readonly int _size;

        public Witness(nuint size)
        {
            _size = (int)size;
            _p = (byte*)Kmalloc.Alloc(size);
            new Span<byte>(_p, _size).Fill(0xA5);
        }

        public bool Intact() => !new ReadOnlySpan<byte>(_p, _size).ContainsAnyExcept((byte)0xA5);

        public void Dispose() => Kmalloc.Free(_p);
    }

    public static TheoryData<ulong> HugeSizes => new()
    {
        ulong.MaxValue, ulong.MaxValue - 1, ulong.MaxValue - 4095, ulong.MaxValue - 65535, ulong.MaxValue - 65536,
        ulong.MaxValue / 2 + 1, Kmalloc.MaxAllocationSize + 1,
    };

    [Theory]
    [MemberData(nameof(HugeSizes))]
    public void Sizes_near_nuint_MaxValue_are_refused_and_touch_nothing(ulong size)
    {
        using var small = new Witness(64);
        using var large = new Witness(20_000);
        nuint n = (nuint)size;

        Assert.False(Kmalloc.TryAlloc(n, out void* p));
        Assert.True(p == null);
        var e = Assert.Throws<SlabAllocationException>(() => Kmalloc.Alloc(n));
        Assert.Equal(AllocationFailure.TooLarge, e.Reason);
        Assert.Contains($"{n} bytes", e.Message);
        Assert.Throws<SlabAllocationException>(() => Kmalloc.AllocZeroed(n));
        Assert.True(Kmalloc.AllocNoLock(n) == null);
        Assert.True(small.Intact() && large.Intact());
    }

    [Fact]
    public void A_length_of_zero_minus_one_fails_like_any_refused_allocation()
    {
        int len = 0;
        using var witness = new Witness(4096);
        // What a caller's "(nuint)(len - 1)" gives: refused, catchable as out-of-memory.
        Assert.ThrowsAny<OutOfMemoryException>(() => Kmalloc.Alloc((nuint)(len - 1)));
        Assert.True(witness.Intact());
    }

    [Fact]
    public void Realloc_to_a_huge_size_throws_and_keeps_the_block_and_its_neighbours()
    {
        using var before = new Witness(48);
        byte* p = (byte*)Kmalloc.Alloc(48);
        using var after = new Witness(48);
        for (int i = 0; i < 48; i++)
            p[i] = (byte)i;
        Assert.Throws<SlabAllocationException>(() => Kmalloc.Realloc(p, nuint.MaxValue));
        Assert.Throws<SlabAllocationException>(() => Kmalloc.Realloc(p, unchecked((nuint)Kmalloc.MaxAllocationSize + 1)));
        for (int i = 0; i < 48; i++)
            Assert.Equal((byte)i, p[i]);
        Assert.True(before.Intact() && after.Intact());
        Kmalloc.Free(p);
    }

    [Fact]
    public void Realloc_of_a_large_block_to_a_huge_size_throws_before_growing_in_place()
    {
        // A large block tries to grow into the free pages after it first: near nuint.MaxValue
        // the page rounding would wrap, so the size must be refused before it.
        byte* p = (byte*)Kmalloc.Alloc(600_000);
        for (int i = 0; i < 600_000; i += 4096)
            p[i] = (byte)(i >> 12);
        nuint usable = Kmalloc.UsableSize(p);
        long held = Kmalloc.LargeBytes;
        foreach (nuint huge in new[] { nuint.MaxValue, nuint.MaxValue - 4095, unchecked((nuint)Kmalloc.MaxAllocationSize + 1) })
        {
            var e = Assert.Throws<SlabAllocationException>(() => Kmalloc.Realloc(p, huge));
            Assert.Equal(AllocationFailure.TooLarge, e.Reason);
        }
        Assert.Equal(usable, Kmalloc.UsableSize(p));
        Assert.Equal(held, Kmalloc.LargeBytes);
        for (int i = 0; i < 600_000; i += 4096)
            Assert.Equal((byte)(i >> 12), p[i]);
        Kmalloc.Free(p);
    }

    [Fact]
    public void A_refused_allocation_is_caught_as_out_of_memory_with_its_reason()
    {
        using var cache = SlabCache.Create("oom-catchable", 64, TestOptions.Unmerged);
        using (Pages.FailNthAllocation(1))
        {
            OutOfMemoryException e = Assert.ThrowsAny<OutOfMemoryException>(() => cache.Alloc());
            Assert.Equal(AllocationFailure.InjectedFault, Assert.IsType<SlabAllocationException>(e).Reason);
        }
    }

    [Fact]
    public void A_destructor_that_throws_in_Dispose_is_reported_and_a_second_Dispose_harms_no_other_cache()
    {
        int calls = 0;
        var reports = new List<SlabReport>();
        var cache = SlabCache.Create("dtor-throws", 128, new SlabCacheOptions
        {
            Destructor = _ =>
            {
                if (Interlocked.Increment(ref calls) == 3)
                    throw new InvalidOperationException("destructor bug");
            },
        });
        cache.Free(cache.Alloc());
        void OnReport(SlabReport r)
        {
            if (r.CacheName == "dtor-throws")
                reports.Add(r);
        }
        SlabReports.Reported += OnReport;
        try
        {
            cache.Dispose();   // never throws
        }
        finally
        {
            SlabReports.Reported -= OnReport;
        }
        SlabReport report = Assert.Single(reports);
        Assert.Equal(SlabReportKind.DestructorFailed, report.Kind);
        Assert.Contains("destructor bug", report.Message);
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.Equal(s.ObjectsPerSlab, s.DestructorCalls);   // every object of the slab destructed regardless
        Assert.Equal(calls, s.DestructorCalls);

        // A cache created now may take the registry slot the first one left.
        using var next = SlabCache.Create("after-dtor-throws", 128, TestOptions.Unmerged);
        void* q = next.Alloc();
        cache.Dispose();   // again: a no-op, it frees no barn twice and deregisters nothing
        Kmalloc.Free(q);   // the new cache is still found from its objects
        next.Free(next.Alloc());
        Assert.Equal(0, next.GetStatistics().ActiveObjects);
    }

    [Fact]
    public void Every_free_door_uncharges_an_accounted_object()
    {
        using var group = MemoryGroup.Root.CreateChild("every-door", limit: 1 << 20);
        using var cache = SlabCache.Create("accounted-doors", 100, new SlabCacheOptions { Flags = SlabFlags.Account | SlabFlags.NoMerge });
        void*[] objects = new void*[4];
        using (group.Enter())
        {
            for (int i = 0; i < objects.Length; i++)
                objects[i] = cache.Alloc();
        }
        long each = group.Usage / objects.Length;
        Assert.True(each >= 100, $"charged {group.Usage} for {objects.Length} objects");
        cache.Free(objects[0]);
        Assert.Equal(3 * each, group.Usage);
        Kmalloc.Free(objects[1]);                       // kfree of a cache object
        Assert.Equal(2 * each, group.Usage);
        Kmalloc.FreeNoLock(objects[2]);
        Kmalloc.DrainDeferredFrees();
        Assert.Equal(each, group.Usage);
        Kmalloc.FreeRcu(objects[3]);
        Rcu.Barrier();
        Assert.Equal(0, group.Usage);
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
    }

    [Fact]
    public void UsableSize_of_an_accounted_object_stops_before_the_group_word_and_filling_it_is_safe()
    {
        using var group = MemoryGroup.Root.CreateChild("usable", limit: 1 << 20);
        using var cache = SlabCache.Create("accounted-usable", 100, new SlabCacheOptions { Flags = SlabFlags.Account | SlabFlags.NoMerge });
        byte* p;
        using (group.Enter())
            p = (byte*)cache.Alloc();
        nuint usable = Kmalloc.UsableSize(p);
        Assert.Equal((nuint)104, usable);   // 100 rounded to a word; the group id lives after it
        new Span<byte>(p, (int)usable).Fill(0xFF);
        cache.Free(p);   // the charge is found and released
        Assert.Equal(0, group.Usage);
    }

    [Fact]
    public void A_double_free_of_the_last_freed_object_throws_at_its_caller()
    {
        using var cache = SlabCache.Create("double-top", 64, TestOptions.Unmerged);
        void* p = cache.Alloc();
        void* q = cache.Alloc();
        cache.Free(p);
        var e = Assert.Throws<SlabUsageException>(() => cache.Free(p));
        Assert.Contains("double free", e.Message);
        Assert.Equal((nint)p, e.Address);
        Assert.Equal("double-top", e.CacheName);
        Assert.Throws<SlabUsageException>(() => Kmalloc.Free(p));
        // Nothing changed: the next two allocations are two objects.
        void* a = cache.Alloc();
        void* b = cache.Alloc();
        Assert.True(a != b);
        cache.Free(a);
        cache.Free(b);
        cache.Free(q);
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
    }

    [Fact]
    public void A_double_free_that_reaches_the_slab_is_dropped_and_never_frees_a_slab_with_a_live_object()
    {
        using var cache = SlabCache.Create("double-slab", 64, TestOptions.Unmerged);
        var reports = new List<SlabReport>();
        void OnReport(SlabReport r)
        {
            if (r.CacheName == "double-slab")
                reports.Add(r);
        }
        long* live = (long*)cache.Alloc();
        *live = 42;
        void* x = cache.Alloc();
        void* y = cache.Alloc();
        cache.Free(x);
        cache.Free(y);
        SlabReports.Reported += OnReport;
        try
        {
            cache.Free(x);   // not on top of the sheaf: the naive check cannot see it
            cache.Shrink();  // both copies of x reach the slab; the second is dropped
        }
        finally
        {
            SlabReports.Reported -= OnReport;
        }
        SlabReport report = Assert.Single(reports);
        Assert.Equal(SlabReportKind.DoubleFree, report.Kind);
        Assert.Equal((nint)x, report.Address);
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.Equal(1, s.DoubleFrees);
        Assert.Equal(1, s.ActiveObjects);   // the live object, counted once: not 0, not -1
        Assert.Equal(1, s.Slabs);           // its slab stays
        Assert.Equal(42, *live);
        *live = 43;                         // still mapped, still ours
        cache.Free(live);
        cache.Shrink();
        Assert.Equal(0, cache.GetStatistics().Slabs);
    }

    [Theory]
    [InlineData(SlabFlags.ConsistencyChecks | SlabFlags.NoMerge)]
    [InlineData(SlabFlags.NoMerge)]
    public void A_corrupted_free_list_is_reported_repaired_and_the_cache_goes_on(SlabFlags flags)
    {
        using var cache = SlabCache.Create($"corrupt-{(int)flags}", 64, new SlabCacheOptions { Flags = flags });
        var reports = new List<SlabReport>();
        void OnReport(SlabReport r)
        {
            if (r.CacheName == cache.Name)
                reports.Add(r);
        }
        void* keep = cache.Alloc();          // keeps the slab alive through Shrink
        void* freed = cache.Alloc();
        cache.Free(freed);
        cache.Shrink();                      // freed is now on the slab's free list, its link in its first word
        *(nint*)freed = unchecked((nint)0x4141414141414141);   // a write after free
        SlabReports.Reported += OnReport;
        var got = new HashSet<nint>();
        try
        {
            for (int i = 0; i < 50; i++)
                Assert.True(got.Add((nint)cache.Alloc()), "an object handed out twice after the repair");
        }
        finally
        {
            SlabReports.Reported -= OnReport;
        }
        SlabReport report = Assert.Single(reports);
        Assert.Equal(SlabReportKind.CorruptedFreeList, report.Kind);
        Assert.Contains("0x4141414141414141", report.Message);
        Assert.Equal(1, cache.GetStatistics().FreeListRepairs);
        Assert.DoesNotContain((nint)keep, got);
        foreach (nint p in got)
            cache.Free((void*)p);
        cache.Free(keep);
        cache.Shrink();
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.Equal(0, s.ActiveObjects);
        Assert.Equal(0, s.Slabs);            // nothing was lost in the repair
    }

    [Fact]
    public void A_free_list_link_bent_to_another_free_object_loses_no_destructor_call()
    {
        var destructed = new System.Collections.Concurrent.ConcurrentDictionary<nint, int>();
        var cache = SlabCache.Create("bent-link", 48, new SlabCacheOptions
        {
            Constructor = _ => true,
            Destructor = o => destructed.AddOrUpdate((nint)o, 1, (_, n) => n + 1),
        });
        void* keep = cache.Alloc();
        var freed = Enumerable.Range(0, 8).Select(_ => (nint)cache.Alloc()).ToList();
        freed.ForEach(p => cache.Free((void*)p));
        cache.Shrink();   // the eight are on the slab's free list; keep holds the slab
        // The head's link lives after the object (a ctor/dtor cache): an overflow out of
        // the object before it can bend it to another free object of the same slab, which
        // passes every check and strands the objects in between.
        nint head = freed[^1];
        *(nint*)(head + 48) = freed[0];
        cache.Free(keep);
        cache.Dispose();
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.Equal(s.ConstructorCalls, s.DestructorCalls);        // every constructed object destructed...
        Assert.All(destructed.Values, n => Assert.Equal(1, n));     // ...exactly once
        Assert.Equal(s.ConstructorCalls, destructed.Count);
    }

    [Fact]
    public void A_report_handler_that_throws_is_counted_and_the_cache_goes_on()
    {
        using var cache = SlabCache.Create("throwing-handler", 64, TestOptions.Unmerged);
        void Throwing(SlabReport r)
        {
            if (r.CacheName == "throwing-handler")
                throw new InvalidOperationException("handler bug");
        }
        void* x = cache.Alloc();
        void* y = cache.Alloc();
        cache.Free(x);
        cache.Free(y);
        long failures = SlabReports.HandlerFailures;
        SlabReports.Reported += Throwing;
        try
        {
            cache.Free(x);    // past the naive check; the drain below finds it at the slab
            cache.Shrink();   // reports it, the handler throws, Shrink does not
        }
        finally
        {
            SlabReports.Reported -= Throwing;
        }
        Assert.True(SlabReports.HandlerFailures > failures);
        cache.Free(cache.Alloc());
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
    }

    [Fact]
    public void Forty_nested_locks_are_tracked_and_all_released()
    {
        var locks = Enumerable.Range(0, 40).Select(i => new KLock($"nest-{i:D2}")).ToArray();
        foreach (KLock l in locks)
            l.Enter();
        Assert.All(locks, l => Assert.True(l.IsHeldByCurrentThread));
        for (int i = locks.Length - 1; i >= 0; i--)
            locks[i].Exit();
        Assert.All(locks, l => Assert.False(l.IsHeldByCurrentThread));
    }

    [Fact]
    public void A_leaf_lock_released_twice_or_by_another_thread_throws_and_stays_as_it_was()
    {
        var leaf = new LeafSpinLock("misused_leaf");
        leaf.Enter();
        Exception? fromOther = null;
        bool otherGotIt = true;
        var t = new Thread(() =>
        {
            fromOther = Record.Exception(leaf.Exit);
            otherGotIt = leaf.TryEnter();
        });
        t.Start();
        t.Join();
        Assert.IsType<SynchronizationLockException>(fromOther);
        Assert.False(otherGotIt);            // still held by its owner
        Assert.True(leaf.IsHeldByCurrentThread);
        leaf.Exit();
        var twice = Assert.Throws<SynchronizationLockException>(leaf.Exit);
        Assert.Contains("misused_leaf", twice.Message);
        Assert.True(leaf.TryEnter());        // and still a working lock
        leaf.Exit();
    }

    [Fact]
    public void A_leaked_object_freed_after_Dispose_is_refused_as_disposed()
    {
        var cache = SlabCache.Create("leak-then-free", 64, TestOptions.Unmerged);
        long* p = (long*)cache.Alloc();
        *p = 7;
        cache.Dispose();                     // reports the leak; p's slab stays mapped
        Assert.Equal(1, cache.GetStatistics().LeakedObjects);
        Assert.Equal(7, *p);
        var e = Assert.Throws<ObjectDisposedException>(() => Kmalloc.Free(p));
        Assert.Equal("leak-then-free", e.ObjectName);
        Assert.Throws<ObjectDisposedException>(() => cache.Free(p));
        using var other = SlabCache.Create("after-leak", 64, TestOptions.Unmerged);
        void* q = other.Alloc();             // a new cache never shares the leaked slab's index
        Assert.Throws<ObjectDisposedException>(() => Kmalloc.Free(p));
        other.Free(q);
    }
}

/// <summary>
/// Runs alone: a deferred free drained by another test's slow path between the two
/// FreeNoLock calls would free the object first, and the second call would then be an
/// ordinary double free of a free object (caught at the slab, not at the call).
/// </summary>
[Collection(nameof(GlobalStateCollection))]
public unsafe class DeferredDoubleFreeTests
{
    [Fact]
    public void A_second_FreeNoLock_of_a_queued_object_is_refused_and_nothing_is_handed_out_twice()
    {
        using var cache = SlabCache.Create("nolock-double", 56, TestOptions.Unmerged);
        var p = (nint)cache.Alloc();
        var big = (nint)Kmalloc.Alloc(300_000);   // above the largest class
        Exception? second = null, secondLarge = null;
        long deferredBefore = Kmalloc.GetNoLockStatistics().FreesDeferred;
        // A thread with no sheaf of this cache must defer the free; a large block is always deferred.
        var t = new Thread(() =>
        {
            Kmalloc.FreeNoLock((void*)p);
            second = Record.Exception(() => Kmalloc.FreeNoLock((void*)p));
            Kmalloc.FreeNoLock((void*)big);
            secondLarge = Record.Exception(() => Kmalloc.FreeNoLock((void*)big));
        });
        t.Start();
        t.Join();
        Assert.True(Kmalloc.GetNoLockStatistics().FreesDeferred >= deferredBefore + 2);
        var e = Assert.IsType<SlabUsageException>(second);
        Assert.Contains("double free", e.Message);
        Assert.Equal(p, e.Address);
        Assert.Equal(big, Assert.IsType<SlabUsageException>(secondLarge).Address);
        Kmalloc.DrainDeferredFrees();
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);

        var seen = new HashSet<nint>();
        var taken = new nint[300];
        for (int i = 0; i < taken.Length; i++)
        {
            taken[i] = (nint)cache.Alloc();
            Assert.True(seen.Add(taken[i]), $"0x{taken[i]:x} handed out twice");
        }
        cache.FreeBulk(taken);
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
    }
}
