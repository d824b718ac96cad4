namespace Kmem.Tests;

public unsafe class KmallocTests
{
    [Fact]
    public void Every_size_up_to_the_largest_class_gets_enough_aligned_bytes()
    {
        var held = new List<nint>();
        for (nuint size = 0; size <= Kmalloc.MaxCachedSize; size += size < 256 ? 1u : size < 8192 ? 61u : 1021u)
        {
            byte* p = (byte*)Kmalloc.Alloc(size);
            nuint usable = Kmalloc.UsableSize(p);
            Assert.True(usable >= size, $"size {size}: usable {usable}");
            Assert.True(usable <= Math.Max(8, size * 2), $"size {size}: usable {usable} wastes more than half");
            if (size > 128)
                Assert.True(usable * 4 <= size * 5 + 32, $"size {size}: usable {usable} wastes more than a quarter of its doubling");
            Assert.Equal(0, (nint)p % 8);
            if (nuint.IsPow2(usable))
                Assert.Equal(0, (nint)p % (nint)Math.Min(usable, 4096u));
            new Span<byte>(p, (int)usable).Fill(0xAB);
            held.Add((nint)p);
        }
        foreach (nint p in held)
            Kmalloc.Free((void*)p);
    }

    [Theory]
    [InlineData(Kmalloc.MaxCachedSize + 1)]
    [InlineData(1 << 20)]
    [InlineData(3_000_000)]
    public void Large_sizes_come_from_pages_and_go_back(int size)
    {
        long before = Kmalloc.LargeBytes;
        byte* p = (byte*)Kmalloc.AllocZeroed((nuint)size);
        Assert.True(Kmalloc.UsableSize(p) >= (nuint)size);
        Assert.True(new ReadOnlySpan<byte>(p, size).IndexOfAnyExcept((byte)0) < 0);
        p[size - 1] = 1;
        Assert.True(Kmalloc.LargeBytes >= before + size);
        Kmalloc.Free(p);
    }

    [Fact]
    public void AllocZeroed_clears_reused_objects()
    {
        for (int round = 0; round < 3; round++)
        {
            var list = new List<nint>();
            for (int i = 0; i < 500; i++)
            {
                byte* p = (byte*)Kmalloc.AllocZeroed(200);
                Assert.True(new ReadOnlySpan<byte>(p, 200).IndexOfAnyExcept((byte)0) < 0);
                new Span<byte>(p, 200).Fill(0xFF);
                list.Add((nint)p);
            }
            foreach (nint p in list)
                Kmalloc.Free((void*)p);
        }
    }

    [Fact]
    public void Free_of_null_is_a_no_op()
    {
        Kmalloc.Free(null);
        Assert.Equal(0u, Kmalloc.UsableSize(null));
    }

    [Fact]
    public void Realloc_keeps_contents_when_growing_and_shrinking()
    {
        byte* p = (byte*)Kmalloc.Realloc(null, 10);
        for (int i = 0; i < 10; i++)
            p[i] = (byte)i;
        foreach (int size in new[] { 100, 5000, 20_000, 300_000, 9000, 700, 16, 10 })
        {
            p = (byte*)Kmalloc.Realloc(p, (nuint)size);
            Assert.True(Kmalloc.UsableSize(p) >= (nuint)size);
            for (int i = 0; i < 10; i++)
                Assert.Equal((byte)i, p[i]);
        }
        Assert.True(Kmalloc.Realloc(p, 0) == null);
    }

    [Fact]
    public void Realloc_within_the_usable_size_stays_in_place()
    {
        void* p = Kmalloc.Alloc(50);
        Assert.True(Kmalloc.Realloc(p, 64) == p);
        void* q = Kmalloc.Realloc(p, 65);
        Assert.True(q != p);
        Kmalloc.Free(q);
    }

    [Fact]
    public void Kmalloc_frees_objects_of_any_slab_cache_as_kfree_does()
    {
        using var cache = SlabCache.Create("kfree-compatible", 72, TestOptions.Unmerged);
        void* p = cache.Alloc();
        Assert.Equal((nuint)72, Kmalloc.UsableSize(p));
        Kmalloc.Free(p);
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
    }

    [Fact]
    public void Caches_are_the_kernel_size_classes()
    {
        // The kernel's to 128 B, then four per doubling to 256 KiB.
        Assert.Equal(new[]
            {
                8, 16, 32, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
                1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096, 5120, 6144, 7168, 8192,
                10240, 12288, 14336, 16384, 20480, 24576, 28672, 32768, 40960, 49152, 57344, 65536,
                81920, 98304, 114688, 131072, 163840, 196608, 229376, 262144,
            },
            Kmalloc.Caches.Select(c => c.ObjectSize));
        Assert.All(Kmalloc.Caches, c => Assert.StartsWith("kmalloc-", c.Name, StringComparison.Ordinal));
    }
}
