namespace Kmem.Tests;

/// <summary>The page limit is process-wide, so these run alone.</summary>
[CollectionDefinition(nameof(PageLimitCollection), DisableParallelization = true)]
public sealed class PageLimitCollection;

public unsafe class FaultInjectionTests
{
    [Fact]
    public void The_nth_block_allocation_of_this_thread_fails_cleanly()
    {
        using var cache = SlabCache.Create("fault", 4096);
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
        using var cache = SlabCache.Create("fault-throw", 100);
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
    public void Allocation_past_the_limit_fails_and_nothing_held_is_lost()
    {
        using var cache = SlabCache.Create("limited", 1024);
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
