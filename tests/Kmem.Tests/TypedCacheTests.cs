namespace Kmem.Tests;

public unsafe class TypedCacheTests
{
    private struct Particle
    {
        public double X, Y, Z;
        public int Id;
    }

    [Fact]
    public void Typed_cache_hands_out_T_pointers_and_checks_frees()
    {
        using var cache = new SlabCache<Particle>("particles", TestOptions.Unmerged);
        Assert.Equal(sizeof(Particle), cache.Cache.ObjectSize);
        Particle* p = cache.Alloc();
        *p = new Particle { X = 1, Y = 2, Z = 3, Id = 7 };
        Assert.True(cache.TryAlloc(out Particle* q));
        q->Id = 8;
        Assert.Equal(2, cache.GetStatistics().ActiveObjects);
        Assert.Equal(7, p->Id);
        Assert.Equal(6, p->X + p->Y + p->Z);
        cache.Free(p);
        cache.Free(q);
        Assert.Throws<SlabUsageException>(() => cache.Free((Particle*)((byte*)q + 8)));
        cache.Shrink();
        Assert.Equal(0, cache.GetStatistics().Slabs);
    }
}
