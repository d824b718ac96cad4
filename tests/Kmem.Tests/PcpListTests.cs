using Kmem.PageLayer;

namespace Kmem.Tests;

/// <summary>
/// The per-CPU lists of free blocks (issue 13: the kernel's pcp lists): a freed block of a
/// hot order is reused without the zone, Trim and the decay drain the lists back to the
/// zone and the OS, the accounting holds with blocks on the lists, and threads that
/// allocate and free such blocks beside a thread that drains never share a block.
/// </summary>
[Collection(nameof(PageLimitCollection))]
public unsafe class PcpListTests
{
    private const nuint Slab64K = 64 * 1024;

    // Other threads of the process (the reclaim thread's slab frees and reserve refills)
    // use the lists too, so these tests follow their own blocks (PcpLists.Holds), not totals.

    [Fact]
    public void A_freed_block_of_a_hot_order_is_reused_from_the_list_and_Trim_drains_it()
    {
        Pages.Trim();
        long hits = Pages.PerCpuListHits;
        void* last = null;
        for (int i = 0; i < 100; i++)
        {
            void* p = Pages.AllocBlock(Slab64K, Slab64K, out _, out _);
            Assert.True(p != null);
            ((byte*)p)[0] = 1;
            Pages.FreeBlock(p, Slab64K);
            last = p;
        }
        // A thread keeps its CPU unit for 64 uses at a time, so nearly every round hits.
        Assert.True(Pages.PerCpuListHits - hits >= 50, $"only {Pages.PerCpuListHits - hits} of 100 allocations came from a list");
        Assert.True(PcpLists.Holds(last), "the last freed block is not on a list");
        Assert.True(PcpLists.Bytes >= (long)Slab64K);
        Assert.True(Pages.CachedBytes >= PcpLists.Bytes);
        Pages.CheckAccounting();   // BytesHeld == dirty pages + dedicated, with blocks on the lists

        Pages.Trim();
        Assert.False(PcpLists.Holds(last), "Trim left the block on its list");
        Pages.CheckAccounting();
    }

    [Fact]
    public void Sizes_the_lists_do_not_take_go_to_the_zone()
    {
        Pages.Trim();
        foreach (nuint size in new nuint[] { 4096, 32 * 1024, 96 * 1024, 4 << 20 })
        {
            void* p = Pages.AllocBlock(size, 4096, out _, out _);
            Assert.True(p != null);
            Pages.FreeBlock(p, size);
            Assert.False(PcpLists.Holds(p), $"a {size} B block went on a list");
        }
        Assert.True(PcpLists.Takes(16) && PcpLists.Takes(512) && PcpLists.TakesBlock((void*)0x10000, 16));
        Assert.False(PcpLists.TakesBlock((void*)0x11000, 16));   // grown in place: not aligned to its size
        Assert.False(PcpLists.Takes(8) || PcpLists.Takes(1024) || PcpLists.Takes(24));
    }

    [Fact]
    public void A_list_is_bounded_and_the_decay_keeps_young_blocks()
    {
        Pages.Trim();
        // More 64 KiB blocks than one list holds (1 MiB of them): the rest go to the zone.
        var blocks = new List<nint>();
        for (int i = 0; i < 64; i++)
            blocks.Add((nint)Pages.AllocBlock(Slab64K, Slab64K, out _, out _));
        foreach (nint p in blocks)
            Pages.FreeBlock((void*)p, Slab64K);
        // One list holds 1 MiB of 64 KiB blocks; frees land on two units at most if the
        // thread moved CPU (or three, for a move in the middle of the run).
        int listed = blocks.Count(p => PcpLists.Holds((void*)p));
        Assert.InRange(listed, 1, 3 * PcpLists.BytesPerOrder / (int)Slab64K);
        Assert.True(listed < blocks.Count, "a list took more than its bound");
        PcpLists.Drain(60_000);   // nothing is a minute old: every block stays
        Assert.Equal(listed, blocks.Count(p => PcpLists.Holds((void*)p)));
        PcpLists.Drain(0);
        Assert.Equal(0, blocks.Count(p => PcpLists.Holds((void*)p)));
        Pages.CheckAccounting();
        Pages.Trim();
    }

    [Fact]
    public void Threads_allocating_and_freeing_beside_a_drainer_never_share_a_block()
    {
        const int Threads = 3;
        var stop = DateTime.UtcNow + TimeSpan.FromSeconds(2);
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var workers = new Thread[Threads];
        for (int t = 0; t < Threads; t++)
        {
            int id = t;
            workers[t] = new Thread(() =>
            {
                var random = new Random(id);
                var held = new List<(nint P, nuint Size, long Tag)>();
                long tag = (long)id << 40;
                while (DateTime.UtcNow < stop)
                {
                    if (held.Count < 8 && random.Next(2) == 0)
                    {
                        nuint size = (nuint)4096 << random.Next(4, 10);   // 64 KiB .. 2 MiB: every pcp order
                        void* p = Pages.AllocBlock(size, size, out _, out _);
                        if (p == null)
                            continue;
                        tag++;
                        for (nuint o = 0; o < size; o += 4096)
                            *(long*)((byte*)p + o) = tag;
                        held.Add(((nint)p, size, tag));
                    }
                    else if (held.Count > 0)
                    {
                        int i = random.Next(held.Count);
                        var (p, size, expect) = held[i];
                        for (nuint o = 0; o < size; o += 4096)
                        {
                            long seen = *(long*)((byte*)p + o);
                            if (seen != expect)
                                failures.Enqueue($"block 0x{p:x} page {o / 4096}: {seen:x}, expected {expect:x}");
                        }
                        Pages.FreeBlock((void*)p, size);
                        held.RemoveAt(i);
                    }
                }
                foreach (var (p, size, _) in held)
                    Pages.FreeBlock((void*)p, size);
            });
            workers[t].Start();
        }
        long drains = 0;
        while (DateTime.UtcNow < stop)
        {
            PcpLists.Drain(0);
            drains++;
        }
        foreach (Thread w in workers)
            w.Join();
        Assert.Empty(failures);
        Assert.True(drains > 0);
        Pages.Trim();
        Pages.CheckAccounting();
    }
}
