using System.Runtime.CompilerServices;

namespace Kmem.Tests;

/// <summary>Per-CPU counters: exact sums under concurrency, batch folding, grouped init, charging.</summary>
public unsafe class PerCpuCounterTests
{
    [InlineArray(4)]
    private struct FourCounters
    {
        private PerCpuCounter _first;
    }

    [Fact]
    public void Sum_is_exact_after_concurrent_adds_from_several_threads()
    {
        using var a = new PerCpuAllocator("counter-sum");
        var counter = (PerCpuCounter*)System.Runtime.InteropServices.NativeMemory.AllocZeroed((nuint)sizeof(PerCpuCounter));
        try
        {
            counter->Init(1000, a);
            const int threads = 4, adds = 200_000;
            Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
            {
                for (int i = 0; i < adds; i++)
                    counter->Add(i % 10 == 0 ? -3 : 2);
                counter->Add(PerCpuCounter.Batch * 5L);   // large: straight to the shared count
            });
            long expected = 1000 + threads * (adds / 10 * -3L + (adds - adds / 10) * 2L + PerCpuCounter.Batch * 5L);
            Assert.Equal(expected, counter->Sum());
            // Read may lag by the unfolded deltas, each below the batch.
            Assert.InRange(counter->Read(), expected - (long)PerCpuCounter.Batch * CpuTopology.PossibleCpus,
                expected + (long)PerCpuCounter.Batch * CpuTopology.PossibleCpus);
            foreach (ref int delta in counter->Deltas)
                Assert.InRange(delta, -PerCpuCounter.Batch + 1, PerCpuCounter.Batch - 1);
            counter->Destroy();
            Assert.False(counter->IsInitialized);
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.Free(counter);
        }
    }

    [Fact]
    public void Small_adds_stay_per_cpu_until_the_batch_folds_them()
    {
        using var a = new PerCpuAllocator("counter-batch");
        PerCpuCounter c = default;
        c.Init(0, a);
        c.Add(1);
        Assert.Equal(0, c.Read());          // in this CPU's delta
        Assert.Equal(1, c.Sum());
        c.Add(PerCpuCounter.Batch);         // at least a batch: straight to the shared count
        Assert.Equal(PerCpuCounter.Batch, c.Read());
        Assert.Equal(PerCpuCounter.Batch + 1, c.Sum());
        for (int i = 0; i < 10 * PerCpuCounter.Batch; i++)
            c.Increment();                  // folds at least every batch on whichever CPU
        Assert.Equal(11 * PerCpuCounter.Batch + 1, c.Sum());
        Assert.True(c.Read() > PerCpuCounter.Batch, "no fold happened");
        Assert.Equal(1, c.CompareTo(0));
        Assert.Equal(0, c.CompareTo(11 * PerCpuCounter.Batch + 1));
        c.Set(-5);
        Assert.Equal(-5, c.Sum());
        Assert.Equal(0, c.ReadPositive());
        c.Destroy();
    }

    [Fact]
    public void InitMany_gives_several_counters_one_area_and_one_mutex_acquisition()
    {
        using var a = new PerCpuAllocator("counter-many");
        FourCounters rss = default;
        long before = a.AllocMutex.Acquired;
        PerCpuCounter.InitMany(rss, 7, a);
        Assert.Equal(before + 1, a.AllocMutex.Acquired);
        Assert.Equal(1, a.GetStatistics().Areas);
        for (int i = 0; i < 4; i++)
        {
            Assert.Equal(rss[0].Deltas.Address + i * sizeof(int), rss[i].Deltas.Address);
            rss[i].Add(i);
            Assert.Equal(7 + i, rss[i].Sum());
        }
        PerCpuCounter.DestroyMany(rss);
        Assert.Equal(0, a.GetStatistics().Areas);
        Assert.False(rss[3].IsInitialized);
        PerCpuCounter.DestroyMany(rss);     // already destroyed: nothing to do
    }

    [Fact]
    public void A_counter_copy_cannot_free_what_is_already_freed()
    {
        using var a = new PerCpuAllocator("counter-double");
        PerCpuCounter c = default;
        c.Init(0, a);
        PerCpuCounter copy = c;
        c.Destroy();
        Assert.Throws<SlabUsageException>(() => copy.Destroy());
    }

    private struct Session
    {
        public long Id;
        public FourCounters Stats;
    }

    [Fact]
    public void A_constructor_builds_counters_once_and_the_destructor_frees_them_under_the_leaf_rule()
    {
        // The seed's pattern, with the lock validator on: the constructor takes
        // pcpu_alloc_mutex (no allocator lock is held), the destructor frees with
        // pcpu_lock alone (a leaf, legal in its leaf-only region).
        using var a = new PerCpuAllocator("counter-ctor");
        using var sessions = SlabCache.Create("session-counters", sizeof(Session), new SlabCacheOptions
        {
            Flags = SlabFlags.NoMerge,
            Constructor = o => { PerCpuCounter.InitMany(((Session*)o)->Stats, 0, a); return true; },
            Destructor = o => PerCpuCounter.DestroyMany(((Session*)o)->Stats),
        });
        long acquisitions = a.AllocMutex.Acquired;
        for (int i = 0; i < 10_000; i++)
        {
            var s = (Session*)sessions.Alloc();
            s->Id = i;
            s->Stats[0].Add(1);
            s->Stats[0].Add(-1);
            Assert.Equal(0, s->Stats[0].Sum());
            sessions.Free(s);
        }
        SlabCacheStatistics stats = sessions.GetStatistics();
        // One area per constructed object, none per use.
        Assert.Equal(stats.ConstructorCalls, a.AllocMutex.Acquired - acquisitions);
        Assert.True(stats.ConstructorCalls < 10_000 / 10, $"{stats.ConstructorCalls} constructions for 10000 uses");
        sessions.Shrink();
        Assert.Equal(0, a.GetStatistics().Areas);
        Assert.Equal(sessions.GetStatistics().ConstructorCalls, sessions.GetStatistics().DestructorCalls);
    }
}
