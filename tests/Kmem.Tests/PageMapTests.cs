using Kmem.PageLayer;

namespace Kmem.Tests;

/// <summary>
/// The page map's tagged entries: a slab's granules carry its cache's index + 1 in the top
/// 16 bits (so the free fast path never reads the slab header), a large block's first
/// granule carries tag 0, indexes past the tag's range escape to the header, and every
/// lookup strips the tag.
/// </summary>
public unsafe class PageMapTests
{
    [Fact]
    public void Slab_tags_are_index_plus_one_and_escape_past_the_range()
    {
        Assert.Equal(1u, PageMap.SlabTag(0));
        Assert.Equal(65534u, PageMap.SlabTag(65533));   // the last direct tag: 0xFFFE
        Assert.Equal(PageMap.EscapeTag, PageMap.SlabTag(65534));
        Assert.Equal(PageMap.EscapeTag, PageMap.SlabTag(int.MaxValue));
    }

    [Fact]
    public void Entries_name_the_cache_and_lookups_strip_the_tag()
    {
        using var cache = SlabCache.Create("pagemap-tags", 200, TestOptions.Unmerged);
        byte* obj = (byte*)cache.Alloc();
        ulong entry = PageMap.LookupEntry(obj + 199);
        Assert.Equal(PageMap.SlabTag(cache.Core.Index), (uint)(entry >> PageMap.TagShift));
        var slab = PageMap.Lookup(obj);
        Assert.Equal(entry & PageMap.AddressMask, (ulong)slab);
        Assert.Equal(cache.Core.Index, slab->CacheIndex);

        byte* big = (byte*)Kmalloc.Alloc(1 << 20);
        Assert.Equal(0UL, PageMap.LookupEntry(big) >> PageMap.TagShift);
        Assert.Equal((ulong)big, (ulong)PageMap.Lookup(big)->Block);
        Assert.Equal(0UL, PageMap.LookupEntry(big + 4096));   // only the head granule of a large block
        Kmalloc.Free(big);   // (its entry is cleared, but a test beside this one may map the pages again at once)

        // Freed through either door, by tag: the object comes back, the statistics agree.
        Kmalloc.Free(obj);
        void* again = cache.Alloc();
        cache.Free(again);
        Assert.Equal(0, cache.GetStatistics().ActiveObjects);
    }
}
