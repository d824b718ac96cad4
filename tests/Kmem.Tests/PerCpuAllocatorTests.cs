using System.Runtime.InteropServices;

namespace Kmem.Tests;

/// <summary>The per-CPU allocator: geometry, zeroing, concurrency, chunk release, lock statistics, misuse.</summary>
public unsafe class PerCpuAllocatorTests
{
    private static int Units => CpuTopology.PossibleCpus;

    [Fact]
    public void Every_area_is_aligned_as_asked_and_at_least_as_large()
    {
        using var a = new PerCpuAllocator("pcpu-align");
        var areas = new List<PerCpuPtr<byte>>();
        foreach (int align in new[] { 4, 8, 16, 32, 64, 256, 4096 })
        {
            foreach (int size in new[] { 1, 4, 6, 24, 100, 1000 })
            {
                PerCpuPtr<byte> p = a.Alloc(size, align);
                Assert.Equal(0, p.Address % align);
                Assert.True(a.SizeOf(p) >= size && a.SizeOf(p) % PerCpuAllocator.MinAllocSize == 0);
                areas.Add(p);
            }
        }
        PerCpuPtr<long> typed = a.Alloc<long>(3);
        Assert.Equal(0, typed.Address % 8);
        Assert.Equal(24, a.SizeOf(typed));
        a.Free(typed);
        areas.ForEach(a.Free);
        Assert.Equal(0, a.GetStatistics().Areas);
    }

    [Fact]
    public void Each_cpu_has_its_own_copy_a_unit_apart()
    {
        using var a = new PerCpuAllocator("pcpu-units");
        PerCpuPtr<long> p = a.Alloc<long>();
        for (int cpu = 0; cpu < Units; cpu++)
        {
            Assert.Equal(p.Address + (nint)cpu * PerCpuAllocator.UnitSize, (nint)p.On(cpu));
            p[cpu] = cpu + 1;
        }
        int seen = 0;
        foreach (ref long v in p)
            Assert.Equal(++seen, v);
        Assert.Equal(Units, seen);
        long local = p.Local;
        Assert.InRange(local, 1, Units);
        Assert.Throws<ArgumentOutOfRangeException>(() => p[Units]);
        a.Free(p);
    }

    [Fact]
    public void A_reused_area_comes_back_zeroed_on_every_cpu()
    {
        using var a = new PerCpuAllocator("pcpu-zero");
        PerCpuPtr<byte> first = a.Alloc(200, 8);
        for (int cpu = 0; cpu < Units; cpu++)
            new Span<byte>(first.On(cpu), 200).Fill(0xA5);
        a.Free(first);

        PerCpuPtr<byte> again = a.Alloc(200, 8);
        Assert.Equal(first.Address, again.Address);   // first fit: the same granules, so the zeroing is what is tested
        for (int cpu = 0; cpu < Units; cpu++)
            Assert.True(new Span<byte>(again.On(cpu), 200).IndexOfAnyExcept((byte)0) < 0, $"CPU {cpu}'s copy was not zeroed");
        a.Free(again);
    }

    [Fact]
    public void Concurrent_allocations_never_overlap()
    {
        using var a = new PerCpuAllocator("pcpu-overlap");
        const int threads = 4, ops = 20_000;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        Parallel.For(0, threads, new ParallelOptions { MaxDegreeOfParallelism = threads }, t =>
        {
            var rng = new Random(t);
            var live = new List<(PerCpuPtr<byte> Area, int Size, byte Tag)>();
            for (int i = 0; i < ops; i++)
            {
                if (live.Count > 0 && (live.Count >= 64 || rng.Next(2) == 0))
                {
                    int k = rng.Next(live.Count);
                    var (area, size, tag) = live[k];
                    for (int cpu = 0; cpu < Units; cpu++)
                    {
                        if (new Span<byte>(area.On(cpu), size).IndexOfAnyExcept(tag) >= 0)
                            failures.Enqueue($"area {area} of thread {t} was overwritten on CPU {cpu}");
                    }
                    a.Free(area);
                    live.RemoveAt(k);
                }
                else
                {
                    int size = rng.Next(1, 600);
                    PerCpuPtr<byte> area = a.Alloc(size, 1 << rng.Next(2, 7));
                    byte tag = (byte)(1 + (t * 61 + i) % 255);
                    for (int cpu = 0; cpu < Units; cpu++)
                    {
                        var bytes = new Span<byte>(area.On(cpu), size);
                        if (bytes.IndexOfAnyExcept((byte)0) >= 0)
                            failures.Enqueue($"area {area} was not zeroed on CPU {cpu}");
                        bytes.Fill(tag);
                    }
                    live.Add((area, size, tag));
                }
            }
            live.ForEach(x => a.Free(x.Area));
        });
        Assert.Empty(failures);
        PerCpuStatistics stats = a.GetStatistics();
        Assert.Equal(0, stats.Areas);
        Assert.Equal(stats.Allocations, stats.Frees);
        Assert.Equal(0, stats.BytesInUse);
    }

    [Fact]
    public void Empty_chunks_beyond_one_are_returned_by_the_balance_work()
    {
        using var a = new PerCpuAllocator("pcpu-balance");
        // Four 8 KiB areas fill a chunk's 32 KiB unit: twelve need three chunks.
        var areas = Enumerable.Range(0, 12).Select(_ => a.Alloc(8 * 1024, 8)).ToList();
        Assert.Equal(3, a.GetStatistics().Chunks);
        areas.ForEach(a.Free);   // pcpu_lock only: a free never unmaps a chunk itself

        // The free that emptied a second chunk asked the reclaim thread for the balance work.
        // A chunk leaves the list before it is unmapped and counted freed: wait for both.
        Assert.True(SpinWait.SpinUntil(() => a.GetStatistics() is { Chunks: 1, ChunksFreed: 2 }, TimeSpan.FromSeconds(20)),
            $"chunks left: {a.GetStatistics().Chunks}, freed {a.GetStatistics().ChunksFreed}");
        PerCpuStatistics stats = a.GetStatistics();
        Assert.Equal(1, stats.EmptyChunks);
        Assert.Equal(2, stats.ChunksFreed);
        Assert.Equal((long)PerCpuAllocator.UnitSize * Units, stats.BytesHeld);
        Assert.Equal(0, a.Balance());
    }

    [Fact]
    public void Every_allocation_takes_the_global_mutex_once_and_a_free_never()
    {
        using var a = new PerCpuAllocator("pcpu-mutex-count");
        long before = a.AllocMutex.Acquired;
        long areaLockBefore = a.AreaLock.Acquired;
        var areas = Enumerable.Range(0, 10).Select(_ => a.Alloc<int>(4)).ToList();
        Assert.Equal(before + 10, a.AllocMutex.Acquired);
        areas.ForEach(a.Free);
        Assert.Equal(before + 10, a.AllocMutex.Acquired);
        Assert.True(a.AreaLock.Acquired >= areaLockBefore + 20);
        Assert.Equal(10, a.GetStatistics().AllocMutex.Acquired - before);
    }

    [Fact]
    public void Contended_acquisitions_are_counted_with_their_wait()
    {
        using var a = new PerCpuAllocator("pcpu-contention");
        a.Free(a.Alloc<long>());
        Locking.LockStatistics before = a.AllocMutex.GetStatistics();
        Parallel.For(0, 4, new ParallelOptions { MaxDegreeOfParallelism = 4 }, _ =>
        {
            for (int i = 0; i < 20_000; i++)
                a.Free(a.Alloc<long>());
        });
        Locking.LockStatistics s = a.AllocMutex.GetStatistics();
        Assert.Equal("pcpu_alloc_mutex", s.Name);
        Assert.Equal(80_001, s.Acquired);
        Assert.Equal(80_000, s.Since(before).Acquired);
        Assert.InRange(s.Contended, 0, s.Acquired);
        if (s.Contended > 0)
        {
            // TimeSpan counts 100 ns ticks: a short wait rounds to 0, and the average (a
            // rounded total over the count) may fall a tick outside [min, max].
            Assert.True(s.TotalWait > TimeSpan.Zero, $"total wait {s.TotalWait}");
            Assert.True(s.MaxWait >= s.MinWait, $"max {s.MaxWait} < min {s.MinWait}");
            Assert.InRange(s.AverageWait.Ticks, s.MinWait.Ticks - 1, s.MaxWait.Ticks + 1);
        }
        Assert.Contains(Locking.LockStatistics.ByClass(), c => c.Name == "pcpu_alloc_mutex" && c.Acquired >= 80_000);
        Assert.Contains("pcpu_alloc_mutex", Locking.LockStatistics.Format([s]), StringComparison.Ordinal);
    }

    [Fact]
    public void Bad_frees_name_the_allocator_and_the_address_and_change_nothing()
    {
        using var a = new PerCpuAllocator("pcpu-misuse");
        using var other = new PerCpuAllocator("pcpu-other");
        PerCpuPtr<byte> p = a.Alloc(64, 8);
        PerCpuPtr<byte> q = other.Alloc(64, 8);
        p[0] = 7;

        var interior = new PerCpuPtr<byte>(p.Address + 8);
        var e = Assert.Throws<SlabUsageException>(() => a.Free(interior));
        Assert.Equal("pcpu-misuse", e.CacheName);
        Assert.Equal(interior.Address, e.Address);
        Assert.Contains("inside an area", e.Message, StringComparison.Ordinal);

        e = Assert.Throws<SlabUsageException>(() => a.Free(q));
        Assert.Contains("pcpu-other", e.Message, StringComparison.Ordinal);

        nint native = (nint)NativeMemory.Alloc(64);
        try
        {
            e = Assert.Throws<SlabUsageException>(() => a.Free(new PerCpuPtr<byte>(native)));
            Assert.Contains("not in CPU 0's unit of any per-CPU chunk", e.Message, StringComparison.Ordinal);
        }
        finally
        {
            NativeMemory.Free((void*)native);
        }

        Assert.Equal(7, p[0]);
        Assert.Equal(1, a.GetStatistics().Areas);
        a.Free(p);
        e = Assert.Throws<SlabUsageException>(() => a.Free(p));
        Assert.Contains("not allocated", e.Message, StringComparison.Ordinal);
        other.Free(q);
    }

    [Fact]
    public void Dispose_with_live_areas_refuses_and_keeps_them()
    {
        var a = new PerCpuAllocator("pcpu-dispose");
        PerCpuPtr<int> p = a.Alloc<int>();
        var e = Assert.Throws<SlabUsageException>(a.Dispose);
        Assert.Equal(1, e.LiveObjects);
        p.Local = 5;
        a.Free(p);
        a.Dispose();
        Assert.Equal(0, a.GetStatistics().Chunks);
        Assert.Throws<ObjectDisposedException>(() => a.Alloc<int>());
        Assert.Throws<InvalidOperationException>(() => PerCpuAllocator.Shared.Dispose());
    }

    [Fact]
    public void Sizes_and_alignments_outside_the_unit_are_refused()
    {
        using var a = new PerCpuAllocator("pcpu-args");
        Assert.Throws<ArgumentOutOfRangeException>(() => a.Alloc(0, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => a.Alloc(PerCpuAllocator.UnitSize + 1, 8));
        Assert.Throws<ArgumentOutOfRangeException>(() => a.Alloc(8, 3));
        PerCpuPtr<byte> whole = a.Alloc(PerCpuAllocator.UnitSize, 8);   // a whole unit fits a chunk of its own
        a.Free(whole);
    }

    [Fact]
    public void The_possible_cpu_list_is_read_as_the_kernel_writes_it()
    {
        Assert.Equal(3, CpuTopology.HighestInRanges("0-3\n"));
        Assert.Equal(11, CpuTopology.HighestInRanges("0-3,8,10-11"));
        Assert.Equal(0, CpuTopology.HighestInRanges("0"));
        Assert.Equal(-1, CpuTopology.HighestInRanges(""));
        Assert.True(CpuTopology.PossibleCpus >= Environment.ProcessorCount);
        Assert.InRange(CpuTopology.CurrentCpu, 0, CpuTopology.PossibleCpus - 1);
    }
}
