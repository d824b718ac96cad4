namespace Kmem.Tests;

/// <summary>The page limit is process-wide, so these run alone.</summary>
[CollectionDefinition(nameof(PageLimitCollection), DisableParallelization = true)]
public sealed class PageLimitCollection;

public unsafe class FaultInjectionTests
{
    [Fact]
    public void The_nth_block_allocation_of_this_thread_fails_cleanly()
    {
        using var cache = SlabCache.Create("fault", 4096, TestOptions.Unmerged);
        int perSlab = cache.GetStatistics().ObjectsPerSlab;
        var objects = new List<nint>();
        using (Pages.FailNthAllocation(2))
        {
            // The first slab comes; the second is refused.
            for (int i = 0; i < perSlab; i++)
            {
                Assert.True(cache.TryAlloc(out void* p));
                objects.Add((nint)p);
            }
            Assert.False(cache.TryAlloc(out void* none));
            Assert.True(none == null);
            Assert.Equal(perSlab, cache.GetStatistics().ActiveObjects);
        }
        // Disarmed: allocation works again, and nothing already held was touched.
        void* q = cache.Alloc();
        objects.Add((nint)q);
        using (Pages.FailNthAllocation(1))
        {
            var e = Assert.Throws<SlabAllocationException>(() => Kmalloc.Alloc(1 << 20));
            Assert.Equal(AllocationFailure.InjectedFault, e.Reason);
        }
        foreach (nint p in objects)
            cache.Free((void*)p);
    }

    [Fact]
    public void Alloc_throws_naming_the_cache_and_the_reason()
    {
        using var cache = SlabCache.Create("fault-throw", 100, TestOptions.Unmerged);
        using (Pages.FailNthAllocation(1))
        {
            var e = Assert.Throws<SlabAllocationException>(() => cache.Alloc());
            Assert.Equal("fault-throw", e.CacheName);
            Assert.Equal(AllocationFailure.InjectedFault, e.Reason);
            Assert.Contains("fault-throw", e.Message);
        }
        Assert.Equal(0, cache.GetStatistics().Slabs);
    }
}

[Collection(nameof(PageLimitCollection))]
public unsafe class PageLimitTests
{
    [Fact]
    public void A_retry_after_a_failed_constructor_succeeds_under_a_limit_of_one_slab()
    {
        int calls = 0;
        bool fail = true;
        using var cache = SlabCache.Create("ctor-retry-limited", 256, new SlabCacheOptions
        {
            Constructor = _ => !(fail && ++calls == 10),   // the tenth object of the first slab fails
            Destructor = _ => { },
        });
        long slab = cache.GetStatistics().SlabSize;
        try
        {
            Pages.Trim();
            Pages.Limit = Pages.BytesHeld + slab;   // room for exactly one slab
            Assert.False(cache.TryAlloc(out _));
            Assert.Equal(0, cache.GetStatistics().BytesHeld);   // given back before TryAlloc returned
            fail = false;
            Assert.True(cache.TryAlloc(out void* p), "the rolled-back slab still counts against the limit");
            cache.Free(p);
        }
        finally
        {
            Pages.Limit = 0;
        }
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.Equal(1, s.ConstructorFailures);
        Assert.Equal(9, s.DestructorCalls);   // the nine built before the failure
    }

    [Fact]
    public void Allocation_past_the_limit_fails_and_nothing_held_is_lost()
    {
        using var cache = SlabCache.Create("limited", 1024, TestOptions.Unmerged);
        var objects = new List<nint>();
        try
        {
            Pages.Limit = Pages.BytesHeld + 4 * cache.GetStatistics().SlabSize + 1;
            while (cache.TryAlloc(out void* p))
            {
                *(long*)p = objects.Count;
                objects.Add((nint)p);
                Assert.True(objects.Count < 10_000, "the limit was not enforced");
            }
            Assert.True(Pages.BytesHeld <= Pages.Limit);
            var e = Assert.Throws<SlabAllocationException>(() => cache.Alloc());
            Assert.Equal(AllocationFailure.PageLimit, e.Reason);
            Assert.Throws<SlabAllocationException>(() => Kmalloc.Alloc(10_000_000));
            Assert.False(Kmalloc.TryAlloc(10_000_000, out _));
        }
        finally
        {
            Pages.Limit = 0;
        }
        for (int i = 0; i < objects.Count; i++)
            Assert.Equal(i, *(long*)objects[i]);
        foreach (nint p in objects)
            cache.Free((void*)p);
        Assert.Throws<ArgumentOutOfRangeException>(() => Pages.Limit = -1);
    }
}

public unsafe class LargeBlockReuseTests
{
    [Fact]
    public void A_reused_large_block_is_zeroed_by_AllocZeroed()
    {
        for (int round = 0; round < 20; round++)
        {
            byte* dirty = (byte*)Kmalloc.Alloc(400_000);
            new Span<byte>(dirty, 400_000).Fill(0xEE);
            Kmalloc.Free(dirty);
            byte* p = (byte*)Kmalloc.AllocZeroed(400_000);
            Assert.True(new ReadOnlySpan<byte>(p, 400_000).IndexOfAnyExcept((byte)0) < 0, "AllocZeroed returned dirty bytes");
            Kmalloc.Free(p);
        }
    }
}
