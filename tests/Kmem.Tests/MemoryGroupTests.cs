namespace Kmem.Tests;

/// <summary>
/// Memory groups: limits up the hierarchy, accounted caches and per-CPU areas, charge and
/// uncharge symmetry. The per-CPU charge stocks are process-wide, so these run alone.
/// </summary>
[Collection(nameof(GlobalStateCollection))]
public unsafe class MemoryGroupTests
{
    [Fact]
    public void Accounted_kmalloc_charges_and_uncharges_symmetrically_from_any_thread_and_every_door()
    {
        using var group = MemoryGroup.Root.CreateChild("kmalloc-cg", limit: 16 << 20);
        var small = new nint[6];
        nint large;
        using (group.Enter())
        {
            for (int i = 0; i < small.Length; i++)
                small[i] = (nint)Kmalloc.Alloc(100, KmallocFlags.Account | KmallocFlags.Zero);
            large = (nint)Kmalloc.Alloc(300_000, KmallocFlags.Account);   // a large block
        }
        Assert.All(small, p => Assert.Equal(0, *(long*)p));
        Assert.Equal((nuint)128, Kmalloc.UsableSize((void*)small[0]));   // kmalloc-cg-128; the group id lives after the usable bytes
        long each = (group.Usage - (long)Kmalloc.UsableSize((void*)large)) / small.Length;
        Assert.True(each >= 128, $"charged {group.Usage}");
        long usage = group.Usage;
        void Freed(long bytes)
        {
            usage -= bytes;
            Assert.Equal(usage, group.Usage);
        }
        var other = new Thread(() => Kmalloc.Free((void*)small[0]));   // from a thread outside the group
        other.Start();
        other.Join();
        Freed(each);
        Kmalloc.Free((void*)small[1]);
        Freed(each);
        Kmalloc.FreeNoLock((void*)small[2]);
        Kmalloc.DrainDeferredFrees();
        Freed(each);
        Kmalloc.FreeRcu((void*)small[3]);
        Rcu.Barrier();
        Freed(each);
        Kmalloc.FreeNoLock((void*)small[4]);
        Kmalloc.Free((void*)small[5]);
        Kmalloc.DrainDeferredFrees();
        Freed(2 * each);
        Kmalloc.Free((void*)large);
        Assert.Equal(0, group.Usage);
        Assert.Equal(0, Kmalloc.AccountedCaches.Sum(c => c.GetStatistics().ActiveObjects));
    }

    [Fact]
    public void Realloc_keeps_accounted_memory_accounted_up_and_down_across_the_large_boundary()
    {
        using var group = MemoryGroup.Root.CreateChild("realloc-cg", limit: 16 << 20);
        byte* p;
        using (group.Enter())
        {
            p = (byte*)Kmalloc.Alloc(40, KmallocFlags.Account);
            for (int i = 0; i < 40; i++)
                p[i] = (byte)i;
            foreach (nuint size in new nuint[] { 300, 5000, 70_000, 600 })
            {
                p = (byte*)Kmalloc.Realloc(p, size);
                Assert.True(group.Usage >= (long)size, $"{size} B: usage {group.Usage}");
            }
        }
        for (int i = 0; i < 40; i++)
            Assert.Equal((byte)i, p[i]);
        Kmalloc.Free(p);
        Assert.Equal(0, group.Usage);
    }

    [Fact]
    public void AllocNoLock_with_Account_over_the_limit_returns_null_and_charges_nothing()
    {
        using var group = MemoryGroup.Root.CreateChild("nolock-cg", limit: 64 << 10);
        var taken = new List<nint>();
        using (group.Enter())
        {
            // Up to the limit with ordinary accounted allocations; they also fill this
            // thread's kmalloc-cg-1024 sheaf, so AllocNoLock finds an object below and only
            // the charge can refuse it.
            while (Kmalloc.TryAlloc(1000, KmallocFlags.Account, out void* p))
            {
                taken.Add((nint)p);
                Assert.True(taken.Count < 1000, "the group's limit was never reached");
            }
            long usage = group.Usage;
            Assert.True(usage <= group.Limit);
            Assert.True(Kmalloc.AllocNoLock(1000, KmallocFlags.Account) == null);
            Assert.Equal(usage, group.Usage);                               // the refusal charged nothing
            var dirty = (byte*)Kmalloc.Alloc(1000);
            new Span<byte>(dirty, 1000).Fill(0xAB);
            Kmalloc.Free(dirty);                                            // on top of this thread's kmalloc-1024 sheaf
            void* plain = Kmalloc.AllocNoLock(1000, KmallocFlags.Zero);     // not accounted: not refused
            Assert.True(plain != null);
            Assert.False(new ReadOnlySpan<byte>(plain, 1000).ContainsAnyExcept((byte)0));
            Kmalloc.FreeNoLock(plain);
        }
        foreach (nint p in taken)
            Kmalloc.FreeNoLock((void*)p);
        Kmalloc.DrainDeferredFrees();
        Assert.Equal(0, group.Usage);
    }

    private static readonly SlabCacheOptions Accounted = new() { Flags = SlabFlags.Account | SlabFlags.NoMerge };

    [Fact]
    public void Limits_are_enforced_up_the_hierarchy_and_usage_returns_to_zero()
    {
        using var parent = MemoryGroup.Root.CreateChild("tenant", limit: 256 * 1024);
        using var a = parent.CreateChild("tenant/a", limit: 1024 * 1024);
        using var b = parent.CreateChild("tenant/b");
        using var cache = SlabCache.Create("accounted-1k", 1000, Accounted);
        var objects = new List<nint>();
        using (a.Enter())
        {
            while (cache.TryAlloc(out void* p))
                objects.Add((nint)p);
        }
        long stride = cache.Stride;
        Assert.True(objects.Count * stride <= parent.Limit, $"{objects.Count} objects passed the parent's limit");
        Assert.True((objects.Count + 1) * stride > parent.Limit, $"only {objects.Count} objects fit under {parent.Limit} bytes");
        Assert.Equal(objects.Count * stride, a.Usage);
        Assert.Equal(a.Usage, parent.Usage);
        Assert.True(parent.Failures > 0);
        Assert.Equal(0, a.Failures);       // a's own limit was never the one passed

        // The parent is full: its other child is refused too, with the group named.
        SlabAllocationException e;
        using (b.Enter())
            e = Assert.Throws<SlabAllocationException>(() => cache.Alloc());
        Assert.Equal(AllocationFailure.GroupLimit, e.Reason);
        Assert.Equal("accounted-1k", e.CacheName);
        Assert.Contains("'tenant'", e.Message, StringComparison.Ordinal);
        Assert.Equal(objects.Count, cache.GetStatistics().ActiveObjects);   // the refused object went back

        objects.ForEach(p => cache.Free((void*)p));
        Assert.Equal(0, a.Usage);
        Assert.Equal(0, parent.Usage);
        Assert.Equal(0, b.Usage);
        Assert.True(parent.Peak >= objects.Count * stride);
    }

    [Fact]
    public void An_object_is_uncharged_from_its_group_by_whichever_thread_frees_it()
    {
        using var g = MemoryGroup.Root.CreateChild("producer");
        using var cache = SlabCache.Create("accounted-cross", 200, Accounted);
        var objects = new List<nint>();
        using (g.Enter())
        {
            for (int i = 0; i < 500; i++)
                objects.Add((nint)cache.Alloc());
        }
        Assert.Equal(500 * cache.Stride, g.Usage);
        var consumer = new Thread(() => objects.ForEach(p => cache.Free((void*)p)));
        consumer.Start();
        consumer.Join();
        Assert.Null(MemoryGroup.Current);
        Assert.Equal(0, g.Usage);
    }

    [Fact]
    public void Objects_allocated_outside_any_group_are_not_charged()
    {
        using var g = MemoryGroup.Root.CreateChild("bystander");
        using var cache = SlabCache.Create("accounted-nogroup", 64, Accounted);
        void* p = cache.Alloc();
        Assert.Equal(0, g.Usage);
        using (g.Enter())
            cache.Free(p);                   // freed inside a group it was never charged to
        Assert.Equal(0, g.Usage);
    }

    [Fact]
    public void Charge_and_uncharge_are_symmetric_under_concurrency()
    {
        using var g = MemoryGroup.Root.CreateChild("symmetric", limit: 64L * 1024 * 1024);
        using var child = g.CreateChild("symmetric/child");
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, t =>
        {
            MemoryGroup target = t % 2 == 0 ? g : child;
            var rng = new Random(t);
            var held = new Stack<long>();
            for (int i = 0; i < 50_000; i++)
            {
                if (held.Count > 0 && rng.Next(2) == 0)
                {
                    target.Uncharge(held.Pop());
                }
                else
                {
                    long bytes = rng.Next(1, 200_000);
                    if (target.TryCharge(bytes))
                        held.Push(bytes);
                }
            }
            while (held.Count > 0)
                target.Uncharge(held.Pop());
        });
        Assert.Equal(0, child.Usage);
        Assert.Equal(0, g.Usage);
        MemoryGroup.DrainStocks();
        Assert.Equal(0, g.Usage);
    }

    [Fact]
    public void Per_cpu_areas_are_charged_for_every_cpu_and_can_be_charged_without_realloc()
    {
        using var g = MemoryGroup.Root.CreateChild("percpu-user");
        using var a = new PerCpuAllocator("pcpu-accounting");
        long perArea = 16L * CpuTopology.PossibleCpus;
        PerCpuPtr<long> accounted;
        PerCpuPtr<long> plain;
        using (g.Enter())
        {
            accounted = a.Alloc<long>(2, account: true);
            plain = a.Alloc<long>(2);        // not GFP_ACCOUNT: not charged
        }
        Assert.Equal(perArea, g.Usage);
        Assert.Same(g, a.ChargedTo(accounted));
        Assert.Null(a.ChargedTo(plain));

        // Patch 5: charge a live area to a group for one use, uncharge it, free it later.
        long acquisitions = a.AllocMutex.Acquired;
        using (g.Enter())
            Assert.True(a.Charge(plain));
        Assert.Equal(2 * perArea, g.Usage);
        Assert.Throws<SlabUsageException>(() => a.Charge(plain, g));
        a.Uncharge(plain);
        Assert.Equal(perArea, g.Usage);
        Assert.Equal(acquisitions, a.AllocMutex.Acquired);   // charging never takes the allocation mutex

        a.Free(accounted);
        a.Free(plain);
        Assert.Equal(0, g.Usage);
    }

    [Fact]
    public void Counters_are_charged_many_at_once_and_refused_over_a_limit()
    {
        using var a = new PerCpuAllocator("pcpu-counter-charge");
        long area = 4L * sizeof(int) * CpuTopology.PossibleCpus;
        using var small = MemoryGroup.Root.CreateChild("tiny", limit: area - 1);
        using var big = MemoryGroup.Root.CreateChild("roomy");
        var counters = new PerCpuCounter[4];
        fixed (PerCpuCounter* c = counters)
        {
            var span = new Span<PerCpuCounter>(c, 4);
            PerCpuCounter.InitMany(span, 0, a);
            Assert.False(PerCpuCounter.ChargeMany(span, small));
            Assert.Equal(0, small.Usage);
            Assert.Equal(1, small.Failures);
            Assert.True(PerCpuCounter.ChargeMany(span, big));
            Assert.Equal(area, big.Usage);
            PerCpuCounter.UnchargeMany(span);
            Assert.Equal(0, big.Usage);
            PerCpuCounter.DestroyMany(span);
        }
    }

    [Fact]
    public void A_per_cpu_allocation_over_the_limit_fails_cleanly()
    {
        using var g = MemoryGroup.Root.CreateChild("pcpu-limited", limit: 1024);
        using var a = new PerCpuAllocator("pcpu-limit");
        long acquisitions = a.AllocMutex.Acquired;
        using (g.Enter())
        {
            var e = Assert.Throws<SlabAllocationException>(() => a.Alloc(1024, 8, account: true));
            Assert.Equal(AllocationFailure.GroupLimit, e.Reason);
            Assert.Contains("pcpu-limited", e.Message, StringComparison.Ordinal);
            Assert.False(a.TryAlloc(1024, 8, out _, account: true));
        }
        Assert.Equal(acquisitions, a.AllocMutex.Acquired);   // refused before the mutex
        Assert.Equal(0, g.Usage);
        Assert.Equal(0, a.GetStatistics().Areas);
    }

    [Fact]
    public void A_disposed_group_hands_its_live_charges_to_its_parent()
    {
        using var parent = MemoryGroup.Root.CreateChild("reparent");
        var child = parent.CreateChild("reparent/child");
        using var cache = SlabCache.Create("accounted-reparent", 128, Accounted);
        void* p;
        using (child.Enter())
            p = cache.Alloc();
        Assert.Throws<InvalidOperationException>(parent.Dispose);   // a live child
        child.Dispose();
        Assert.True(child.IsOffline);
        Assert.Throws<ObjectDisposedException>(() => child.Enter());
        Assert.Equal(cache.Stride, parent.Usage);
        cache.Free(p);
        Assert.Equal(0, parent.Usage);
    }

    [Fact]
    public void Enter_scopes_nest_and_restore_the_previous_group()
    {
        using var outer = MemoryGroup.Root.CreateChild("outer");
        using var inner = outer.CreateChild("inner");
        Assert.Null(MemoryGroup.Current);
        using (outer.Enter())
        {
            using (inner.Enter())
                Assert.Same(inner, MemoryGroup.Current);
            Assert.Same(outer, MemoryGroup.Current);
        }
        Assert.Null(MemoryGroup.Current);
        Assert.Equal(["inner"], outer.Children.Select(c => c.Name));
        Assert.Throws<InvalidOperationException>(() => MemoryGroup.Root.Limit = 5);
        Assert.Throws<InvalidOperationException>(() => MemoryGroup.Root.Dispose());
    }

    [Fact]
    public void An_accounted_cache_keeps_the_group_out_of_the_object_and_merges_only_with_its_kind()
    {
        using var accounted = SlabCache.Create("acct-merge-a", 88, new SlabCacheOptions { Flags = SlabFlags.Account });
        using var plain = SlabCache.Create("acct-merge-b", 88);
        Assert.NotEqual(accounted.MergedInto ?? accounted.Name, plain.MergedInto ?? plain.Name);
        using var g = MemoryGroup.Root.CreateChild("bytes");
        byte* p;
        using (g.Enter())
            p = (byte*)accounted.Alloc();
        new Span<byte>(p, 88).Fill(0xFF);    // the user owns every byte of the object
        accounted.Free(p);
        Assert.Equal(0, g.Usage);
    }

    [Fact]
    public void Accounted_areas_allocated_and_freed_concurrently_leave_no_charge_behind()
    {
        using var g = MemoryGroup.Root.CreateChild("pcpu-churn");
        using var a = new PerCpuAllocator("pcpu-churn");
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, t =>
        {
            using var scope = g.Enter();
            var live = new Queue<PerCpuPtr<long>>();
            for (int i = 0; i < 50_000; i++)
            {
                live.Enqueue(a.Alloc<long>(1 + (i + t) % 3, account: true));
                if (live.Count > 4)
                    a.Free(live.Dequeue());   // granules freed here are reused by other threads at once
            }
            while (live.Count > 0)
                a.Free(live.Dequeue());
        });
        Assert.Equal(0, g.Usage);
    }

    [Fact]
    public void A_constructed_accounted_object_keeps_its_state_and_its_charge_apart()
    {
        using var g = MemoryGroup.Root.CreateChild("ctor-accounted");
        using var cache = SlabCache.Create("ctor-accounted", 40, new SlabCacheOptions
        {
            Flags = SlabFlags.Account,
            Constructor = o => { new Span<byte>(o, 40).Fill(0x5A); return true; },
            Destructor = _ => { },
        });
        byte* p;
        using (g.Enter())
            p = (byte*)cache.Alloc();
        Assert.True(new Span<byte>(p, 40).IndexOfAnyExcept((byte)0x5A) < 0);
        Assert.Equal(cache.Stride, g.Usage);
        Assert.True(cache.Stride >= 40 + 16, "the free-list link and the group id both live after the object");
        cache.Free(p);
        Assert.Equal(0, g.Usage);
        using (g.Enter())
            p = (byte*)cache.Alloc();
        Assert.True(new Span<byte>(p, 40).IndexOfAnyExcept((byte)0x5A) < 0, "the object was not left as it was freed");
        cache.Free(p);
        cache.Shrink();
    }
}
