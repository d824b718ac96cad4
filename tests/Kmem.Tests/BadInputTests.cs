using System.Runtime.InteropServices;

namespace Kmem.Tests;

/// <summary>Misuse gets a SlabUsageException naming the cache and the address, and harms nobody else.</summary>
public unsafe class BadInputTests
{
    [Fact]
    public void Freeing_memory_no_slab_holds_is_refused()
    {
        using var cache = SlabCache.Create("foreign", 64, TestOptions.Unmerged);
        void* native = NativeMemory.Alloc(64);
        try
        {
            var e = Assert.Throws<SlabUsageException>(() => cache.Free(native));
            Assert.Equal("foreign", e.CacheName);
            Assert.Equal((nint)native, e.Address);
            Assert.Contains("foreign", e.Message);
            Assert.Contains($"0x{(nint)native:x}", e.Message);
            Assert.Contains("not held by any slab", e.Message);

            int local = 0;
            nint stackAddress = (nint)(&local);
            Assert.Throws<SlabUsageException>(() => cache.Free((void*)stackAddress));
            Assert.Throws<SlabUsageException>(() => cache.Free((void*)0x10));
            Assert.Throws<SlabUsageException>(() => cache.Free((void*)unchecked((nint)0xFFFF_8000_0000_0000)));
            Assert.Throws<SlabUsageException>(() => cache.Free(null));
            Assert.Throws<SlabUsageException>(() => Kmalloc.Free(native));
        }
        finally
        {
            NativeMemory.Free(native);
        }
    }

    [Fact]
    public void Freeing_into_the_wrong_cache_is_refused_and_the_object_stays_valid()
    {
        using var a = SlabCache.Create("cache-a", 64, TestOptions.Unmerged);
        using var b = SlabCache.Create("cache-b", 64, TestOptions.Unmerged);
        long* p = (long*)a.Alloc();
        *p = 0x1234;
        var e = Assert.Throws<SlabUsageException>(() => b.Free(p));
        Assert.Equal("cache-b", e.CacheName);
        Assert.Contains("cache 'cache-a'", e.Message);
        Assert.Contains($"0x{(nint)p:x}", e.Message);
        Assert.Equal(0x1234, *p);
        Assert.Equal(1, a.GetStatistics().ActiveObjects);
        Assert.Equal(0, b.GetStatistics().ActiveObjects);
        a.Free(p);
    }

    [Fact]
    public void Freeing_a_pointer_inside_an_object_is_refused()
    {
        using var cache = SlabCache.Create("interior", 48, TestOptions.Unmerged);
        byte* p = (byte*)cache.Alloc();
        var e = Assert.Throws<SlabUsageException>(() => cache.Free(p + 8));
        Assert.Contains("not the start of an object", e.Message);
        Assert.Contains("8 bytes into object", e.Message);
        Assert.Equal((nint)(p + 8), e.Address);
        Assert.Throws<SlabUsageException>(() => Kmalloc.Free(p + 1));
        // The header of the slab is not an object either.
        byte* header = (byte*)((nint)p & ~0xFFFF);
        Assert.Throws<SlabUsageException>(() => cache.Free(header));
        Assert.Equal(1, cache.GetStatistics().ActiveObjects);
        cache.Free(p);
    }

    [Fact]
    public void Use_after_Dispose_is_refused()
    {
        var cache = SlabCache.Create("disposed", 32, TestOptions.Unmerged);
        void* p = cache.Alloc();
        cache.Free(p);
        cache.Dispose();
        var e = Assert.Throws<ObjectDisposedException>(() => cache.Free(p));
        Assert.Contains("disposed", e.Message);
        Assert.Contains($"0x{(nint)p:x}", e.Message);
        Assert.Equal("disposed", e.ObjectName);
        Assert.Throws<ObjectDisposedException>(() => cache.Alloc());
        Assert.Throws<ObjectDisposedException>(() => cache.TryAlloc(out _));
        Assert.Throws<ObjectDisposedException>(() => cache.Shrink());
        cache.Dispose(); // twice is fine
        Assert.True(cache.TryDispose(out IReadOnlyList<nint> none));
        Assert.Empty(none);
    }

    [Fact]
    public void TryDispose_with_live_objects_names_them_and_leaves_the_cache_usable()
    {
        var cache = SlabCache.Create("leaky", 64, TestOptions.Unmerged);
        var objects = new nint[300];
        cache.AllocBulk(objects);
        cache.FreeBulk(objects.AsSpan(2));
        Assert.False(cache.TryDispose(out IReadOnlyList<nint> live));
        Assert.Equal(2, live.Count);
        Assert.Contains(objects[0], live);
        Assert.Contains(objects[1], live);
        Assert.False(cache.IsDisposed);
        // Still a working cache: objects usable, alloc works, then a clean Dispose.
        *(long*)objects[0] = 7;
        void* more = cache.Alloc();
        cache.Free(more);
        cache.FreeBulk(objects.AsSpan(0, 2));
        cache.Dispose();
        Assert.True(cache.IsDisposed);
    }

    [Fact]
    public void ConsistencyChecks_catch_every_double_free()
    {
        var cache = SlabCache.Create("checked", 64, new SlabCacheOptions { Flags = SlabFlags.ConsistencyChecks });
        var objects = new nint[2000];
        cache.AllocBulk(objects);
        var rng = new Random(7);
        foreach (nint p in objects.OrderBy(_ => rng.Next()))
            cache.Free((void*)p);
        foreach (nint p in objects.Take(100))
        {
            var e = Assert.Throws<SlabUsageException>(() => cache.Free((void*)p));
            Assert.Contains("double free", e.Message);
            Assert.Equal(p, e.Address);
            Assert.Equal("checked", e.CacheName);
        }
        // Nothing was corrupted: 2000 distinct objects come back, and free cleanly. (Not
        // necessarily the same addresses: emptied slabs went back to the page layer, whose
        // blocks tests running in parallel may take.)
        var again = new nint[2000];
        Assert.Equal(2000, cache.AllocBulk(again));
        Assert.Equal(again.Length, again.Distinct().Count());
        Assert.Equal(2000, cache.GetStatistics().ActiveObjects);
        cache.FreeBulk(again);
        cache.Dispose();
    }

    [Fact]
    public void ConsistencyChecks_catch_a_double_free_with_objects_between()
    {
        using var cache = SlabCache.Create("checked-interleaved", 24, new SlabCacheOptions { Flags = SlabFlags.ConsistencyChecks });
        void* a = cache.Alloc();
        void* b = cache.Alloc();
        cache.Free(a);
        void* c = cache.Alloc();   // reuses a
        cache.Free(b);
        cache.Free(c);
        Assert.Throws<SlabUsageException>(() => cache.Free(b));
        Assert.Throws<SlabUsageException>(() => cache.Free(a));
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
    }

    [Fact]
    public void Kmalloc_refuses_interior_and_stale_large_pointers()
    {
        byte* big = (byte*)Kmalloc.Alloc(300_000);   // above the largest class: a page-layer block
        var e = Assert.Throws<SlabUsageException>(() => Kmalloc.Free(big + 4096));
        Assert.Contains("not the start of an allocation", e.Message);
        Assert.Contains($"points 4096 bytes into the large allocation at 0x{(nint)big:x}", e.Message);
        // Only the first page is in the page map: a pointer far into the block is still named.
        e = Assert.Throws<SlabUsageException>(() => Kmalloc.Free(big + 299_999));
        Assert.Contains("points 299999 bytes into", e.Message);
        Assert.Throws<SlabUsageException>(() => Kmalloc.UsableSize(big + 1));
        Assert.Throws<SlabUsageException>(() => Kmalloc.FreeRcu(big + 65_536));
        Assert.Throws<SlabUsageException>(() => Kmalloc.FreeNoLock(big + 65_536));
        Assert.Equal((nuint)303_104, Kmalloc.UsableSize(big));   // untouched by the refused frees
        using (var cache = SlabCache.Create("not-a-large-block", 64, TestOptions.Unmerged))
        {
            e = Assert.Throws<SlabUsageException>(() => cache.Free(big + 8192));   // past the mapped first page
            Assert.Contains("belongs to a large kmalloc allocation", e.Message);
        }
        Kmalloc.Free(big);
        e = Assert.Throws<SlabUsageException>(() => Kmalloc.Free(big));
        Assert.Contains("not held by any slab", e.Message);
        Assert.Equal("kmalloc", e.CacheName);
    }
}
