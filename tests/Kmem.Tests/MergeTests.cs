namespace Kmem.Tests;

/// <summary>Cache merging. Each test uses sizes no other test uses, since merging is process-wide.</summary>
public unsafe class MergeTests
{
    [Fact]
    public void A_compatible_cache_becomes_an_alias_sharing_slabs()
    {
        using var root = SlabCache.Create("merge-root", 200);
        using var alias = SlabCache.Create("merge-alias", 196);   // rounds to the same 200-byte stride
        Assert.Null(root.MergedInto);
        Assert.Equal("merge-root", alias.MergedInto);
        Assert.Equal(["merge-alias"], root.AliasNames);
        Assert.Equal("merge-alias", alias.Name);
        Assert.Equal(196, alias.ObjectSize);

        void* p = alias.Alloc();
        void* q = root.Alloc();
        Assert.Equal(2, root.GetStatistics().ActiveObjects);
        Assert.Equal(root.GetStatistics(), alias.GetStatistics());
        Assert.Equal(1, root.GetStatistics().Aliases);
        root.Free(p);    // one cache underneath: either handle frees
        alias.Free(q);
        Assert.Equal(0, root.GetStatistics().ActiveObjects);
    }

    [Fact]
    public void Caches_that_must_stay_apart_are_not_merged()
    {
        using var root = SlabCache.Create("apart-root", 328);
        using var noMerge = SlabCache.Create("apart-nomerge", 328, new SlabCacheOptions { Flags = SlabFlags.NoMerge });
        using var ctor = SlabCache.Create("apart-ctor", 320, new SlabCacheOptions { Constructor = _ => true });
        using var dtor = SlabCache.Create("apart-dtor", 328, new SlabCacheOptions { Destructor = _ => { } });
        using var debug = SlabCache.Create("apart-debug", 328, new SlabCacheOptions { Flags = SlabFlags.ConsistencyChecks });
        using var random = SlabCache.Create("apart-random", 328, new SlabCacheOptions { Flags = SlabFlags.RandomizeFreelist });
        using var smaller = SlabCache.Create("apart-smaller", 320);   // would waste a pointer per object
        using var aligned = SlabCache.Create("apart-aligned", 328, new SlabCacheOptions { Align = 64 });
        foreach (SlabCache c in new[] { noMerge, ctor, dtor, debug, random, smaller, aligned })
            Assert.Null(c.MergedInto);
        Assert.Empty(root.AliasNames);
    }

    [Fact]
    public void Disposing_an_alias_ends_that_handle_only_and_the_last_handle_frees_everything()
    {
        var root = SlabCache.Create("dispose-root", 456);
        var alias = SlabCache.Create("dispose-alias", 456);
        Assert.Equal("dispose-root", alias.MergedInto);
        void* p = alias.Alloc();
        alias.Free(p);
        alias.Dispose();
        var e = Assert.Throws<ObjectDisposedException>(() => alias.Alloc());
        Assert.Equal("dispose-alias", e.ObjectName);
        Assert.Empty(root.AliasNames);

        void* q = root.Alloc();
        Assert.False(root.TryDispose(out IReadOnlyList<nint> live));   // the last handle checks for live objects
        Assert.Equal([(nint)q], live);
        root.Free(q);
        root.Dispose();
        Assert.Throws<ObjectDisposedException>(() => root.Alloc());
    }

    [Fact]
    public void The_root_handle_may_go_first_and_its_aliases_keep_working()
    {
        var root = SlabCache.Create("early-root", 584);
        var alias = SlabCache.Create("early-alias", 584);
        void* p = alias.Alloc();
        root.Dispose();                     // drops the root's reference only
        alias.Free(p);
        alias.Free(alias.Alloc());
        alias.Dispose();                    // the last handle: everything is freed
        Assert.True(alias.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => alias.Alloc());
    }
}
