using System.Runtime.InteropServices;

namespace Kmem.Tests;

public unsafe class SlabCacheTests
{
    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(8)]
    [InlineData(24)]
    [InlineData(64)]
    [InlineData(100)]
    [InlineData(1000)]
    [InlineData(4096)]
    [InlineData(8192)]
    [InlineData(12345)]
    [InlineData(SlabCache.MaxObjectSize)]
    public void Objects_are_distinct_aligned_writable_and_come_back(int size)
    {
        using var cache = SlabCache.Create($"sizes-{size}", size, TestOptions.Unmerged);
        var seen = new HashSet<nint>();
        var objects = new List<nint>();
        int count = Math.Max(50, 3 * cache.GetStatistics().ObjectsPerSlab + 1 + 3 * cache.SheafCapacity);
        for (int i = 0; i < count; i++)
        {
            byte* p = (byte*)cache.Alloc();
            Assert.True(seen.Add((nint)p), "an address was handed out twice");
            Assert.Equal(0, (nint)p % 8);
            new Span<byte>(p, size).Fill((byte)i);
            objects.Add((nint)p);
        }
        for (int i = 0; i < objects.Count; i++)
        {
            var span = new ReadOnlySpan<byte>((byte*)objects[i], size);
            Assert.True(span.IndexOfAnyExcept((byte)i) < 0, $"object {i} was overwritten by another");
        }
        var stats = cache.GetStatistics();
        Assert.Equal(count, stats.ActiveObjects);
        Assert.True(stats.TotalObjects >= count);
        foreach (nint p in objects)
            cache.Free((void*)p);
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
        cache.Shrink();
        stats = cache.GetStatistics();
        Assert.Equal(0, stats.Slabs);
        Assert.Equal(0, stats.BytesHeld);
    }

    [Theory]
    [InlineData(8, 16)]
    [InlineData(24, 64)]
    [InlineData(100, 128)]
    [InlineData(300, 4096)]
    public void Align_is_honoured(int size, int align)
    {
        using var cache = SlabCache.Create($"align-{size}-{align}", size, new SlabCacheOptions { Align = align, Flags = SlabFlags.NoMerge });
        var objects = new nint[200];
        for (int i = 0; i < objects.Length; i++)
        {
            objects[i] = (nint)cache.Alloc();
            Assert.Equal(0, objects[i] % align);
        }
        cache.FreeBulk(objects);
    }

    [Theory]
    [InlineData(8, 8)]
    [InlineData(20, 32)]
    [InlineData(33, 64)]
    [InlineData(200, 64)]
    public void HwCacheAlign_aligns_to_the_cache_line_halved_for_small_objects(int size, int expected)
    {
        using var cache = SlabCache.Create($"hwalign-{size}", size, new SlabCacheOptions { Flags = SlabFlags.HwCacheAlign | SlabFlags.NoMerge });
        Assert.Equal(expected, cache.Align);
        void* p = cache.Alloc();
        Assert.Equal(0, (nint)p % expected);
        cache.Free(p);
    }

    [Fact]
    public void Bad_arguments_to_Create_are_refused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => SlabCache.Create("zero", 0, TestOptions.Unmerged));
        Assert.Throws<ArgumentOutOfRangeException>(() => SlabCache.Create("huge", SlabCache.MaxObjectSize + 1, TestOptions.Unmerged));
        Assert.Throws<ArgumentException>(() => SlabCache.Create("odd-align", 64, new SlabCacheOptions { Align = 24 }));
        Assert.Throws<ArgumentException>(() => SlabCache.Create("big-align", 64, new SlabCacheOptions { Align = 8192 }));
        Assert.Throws<ArgumentException>(() => SlabCache.Create(" ", 64, TestOptions.Unmerged));
        var e = Assert.Throws<NotSupportedException>(() => SlabCache.Create("redzone", 64, new SlabCacheOptions { Flags = SlabFlags.RedZone }));
        Assert.Contains("RedZone", e.Message);
    }

    [Fact]
    public void Bulk_allocation_fills_the_span_and_bulk_free_returns_all()
    {
        using var cache = SlabCache.Create("bulk", 48, TestOptions.Unmerged);
        var objects = new nint[5000];
        Assert.Equal(objects.Length, cache.AllocBulk(objects));
        Assert.Equal(objects.Length, objects.Distinct().Count());
        Assert.Equal(objects.Length, cache.GetStatistics().ActiveObjects);
        cache.FreeBulk(objects);
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
    }

    [Fact]
    public void Memory_freed_and_shrunk_goes_back_to_the_OS()
    {
        using var cache = SlabCache.Create("return-to-os", 64, TestOptions.Unmerged);
        var objects = new nint[100_000];
        cache.AllocBulk(objects);
        var stats = cache.GetStatistics();
        Assert.True(stats.BytesHeld >= 64L * objects.Length);
        // Payload overhead of a 64 B cache: header and tail waste stay under 1%.
        Assert.True(stats.BytesHeld < 64L * objects.Length * 101 / 100 + stats.SlabSize, $"held {stats.BytesHeld}");
        cache.FreeBulk(objects);
        cache.Shrink();
        var after = cache.GetStatistics();
        Assert.Equal(0, after.BytesHeld);
        Assert.Equal(after.SlabsAllocated, after.SlabsFreed);
    }

    [Fact]
    public void Contents_survive_while_other_objects_come_and_go()
    {
        using var cache = SlabCache.Create("contents", 40, TestOptions.Unmerged);
        var rng = new Random(42);
        var live = new Dictionary<nint, int>();
        for (int step = 0; step < 200_000; step++)
        {
            if (live.Count > 0 && rng.Next(3) == 0)
            {
                nint victim = live.Keys.ElementAt(rng.Next(Math.Min(live.Count, 16)));
                Assert.Equal(live[victim], *(int*)victim);
                Assert.Equal(live[victim], ((int*)victim)[9]);
                cache.Free((void*)victim);
                live.Remove(victim);
            }
            else
            {
                int* p = (int*)cache.Alloc();
                Assert.False(live.ContainsKey((nint)p));
                p[0] = p[9] = step;
                live[(nint)p] = step;
            }
        }
        foreach (var (p, v) in live)
        {
            Assert.Equal(v, *(int*)p);
            cache.Free((void*)p);
        }
    }
}

public unsafe class SlabLayoutTests
{
    [Fact]
    public void The_slab_header_and_bitmap_cost_three_objects_so_a_64KiB_slab_holds_1021_of_64B()
    {
        using var cache = SlabCache.Create("layout-64", 64, TestOptions.Unmerged);
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.Equal(64 * 1024, s.SlabSize);
        Assert.Equal(1021, s.ObjectsPerSlab);   // 1024 slots less one for the header, two for the 128-byte bitmap
    }

    [Fact]
    public void A_ctor_dtor_cache_stores_the_free_link_after_the_object()
    {
        using var cache = SlabCache.Create("layout-ctor-64", 64, new SlabCacheOptions { Constructor = _ => true });
        Assert.Equal(72, cache.GetStatistics().Stride);
    }

    [Fact]
    public void Sheaf_refills_and_flushes_are_counted_in_the_slow_path_by_source_and_target()
    {
        using var cache = SlabCache.Create($"sheaf-counts-{Guid.NewGuid():N}", 64, TestOptions.Unmerged);
        int n = 20 * cache.SheafCapacity;   // more full sheaves than a barn holds (at most 16)
        var objects = new nint[n];
        for (int i = 0; i < n; i++)
            objects[i] = (nint)cache.Alloc();
        SlabCacheStatistics s = cache.GetStatistics();
        Assert.True(s.SheafRefills >= 20, $"{s.SheafRefills} refills from the slabs");
        Assert.Equal(0, s.BarnGets);
        Assert.Equal(0, s.BarnPuts);
        Assert.Equal(0, s.SheafFlushes);
        foreach (nint p in objects)
            cache.Free((void*)p);
        s = cache.GetStatistics();
        Assert.True(s.BarnPuts >= 2, $"{s.BarnPuts} sheaves left in the barn");
        Assert.True(s.SheafFlushes >= 1, $"{s.SheafFlushes} half sheaves back to the slabs with the barn full");
        long refills = s.SheafRefills;
        for (int i = 0; i < n; i++)
            objects[i] = (nint)cache.Alloc();
        s = cache.GetStatistics();
        Assert.Equal(s.BarnPuts, s.BarnGets);   // every parked sheaf was taken back before the slabs were asked
        Assert.True(s.SheafRefills > refills, "the slabs were not asked after the barn ran dry");
        foreach (nint p in objects)
            cache.Free((void*)p);
    }
}
