using System.Runtime.InteropServices;
using Kmem.Workloads;
using Spectre.Console;

namespace Kmem.Cli;

/// <summary>
/// `kmem bench --pages`: the page-layer workloads against the C allocators this machine
/// has, in one process, in alternating rounds (medians; the machine is shared and noisy,
/// so only the ratios within one run mean much).
/// </summary>
internal static class PagesBenchCommand
{
    /// <param name="console">Where the tables go.</param>
    /// <param name="quick">Shorter rounds.</param>
    /// <param name="kmallocOnly">No peers (to count Kmalloc's own system calls with strace).</param>
    /// <param name="big">Also fill 8 GiB with Kmalloc(20000) (and glibc's malloc) and free it: minutes, and 2 GiB of RSS for glibc.</param>
    public static int Run(IAnsiConsole console, bool quick, bool kmallocOnly, bool big)
    {
        IReadOnlyList<string> missing = [];
        IReadOnlyList<NativePeer> peers = kmallocOnly ? [] : NativePeer.Load(out missing);
        console.MarkupLine($"[bold]kmem bench --pages[/]{(quick ? " --quick" : "")}: {Environment.ProcessorCount} cores, {RuntimeInformation.OSDescription}");
        console.MarkupLine($"peers: {(peers.Count == 0 ? "none" : string.Join(", ", peers.Select(p => p.Name)))}");
        long opsBefore = PageLayerWorkloads.Operations;
        foreach (string m in missing)
            console.MarkupLineInterpolated($"[yellow]not found: {m}[/]");
        int rounds = quick ? 3 : 9;
        var round = TimeSpan.FromSeconds(quick ? 0.1 : 0.3);
        var seq = PageLayerWorkloads.Sequence(42, 8 << 10, 256 << 10);
        var small = PageLayerWorkloads.Sequence(43, 8, 1024, live: 2048);
        var medium = PageLayerWorkloads.Sequence(44, 1, 8192, live: 2048);

        var workloads = new (string Name, Func<IMallocOps?, NativePeer?, double> Run)[]
        {
            ("random 8..256 KiB, 256 live, free+alloc", (_, p) => p == null
                ? PageLayerWorkloads.RandomReplace(new KmallocOps(), seq, touch: false, round)
                : PageLayerWorkloads.RandomReplace(new PeerOps(p), seq, touch: false, round)),
            ("the same, every page written", (_, p) => p == null
                ? PageLayerWorkloads.RandomReplace(new KmallocOps(), seq, touch: true, round)
                : PageLayerWorkloads.RandomReplace(new PeerOps(p), seq, touch: true, round)),
            ("random 8..1024 B, 2048 live, free+alloc", (_, p) => p == null
                ? PageLayerWorkloads.RandomReplace(new KmallocOps(), small, touch: false, round)
                : PageLayerWorkloads.RandomReplace(new PeerOps(p), small, touch: false, round)),
            ("random 1..8192 B, 2048 live, free+alloc", (_, p) => p == null
                ? PageLayerWorkloads.RandomReplace(new KmallocOps(), medium, touch: false, round)
                : PageLayerWorkloads.RandomReplace(new PeerOps(p), medium, touch: false, round)),
            ("realloc 16 B -> 1 MiB doubling, clean", (_, p) => p == null
                ? PageLayerWorkloads.ReallocChain(new KmallocOps(), mixedFirst: false, round)
                : PageLayerWorkloads.ReallocChain(new PeerOps(p), mixedFirst: false, round)),
            ("realloc chain after a mixed-size phase", (_, p) => p == null
                ? PageLayerWorkloads.ReallocChain(new KmallocOps(), mixedFirst: true, round)
                : PageLayerWorkloads.ReallocChain(new PeerOps(p), mixedFirst: true, round)),
        };
        var table = new Table().AddColumn("workload (ns per op, median)").AddColumn("Kmalloc");
        foreach (NativePeer p in peers)
            table.AddColumn(p.Name);
        foreach (NativePeer p in peers)
            table.AddColumn($"Kmalloc / {p.Name}");
        foreach (var (name, run) in workloads)
        {
            var samples = new List<double>[peers.Count + 1];
            for (int i = 0; i < samples.Length; i++)
                samples[i] = [];
            for (int r = 0; r < rounds; r++)
            {
                // Alternate the order each round, so drift hits every allocator alike.
                for (int k = 0; k <= peers.Count; k++)
                {
                    int i = r % 2 == 0 ? k : peers.Count - k;
                    samples[i].Add(run(null, i == 0 ? null : peers[i - 1]));
                }
            }
            double[] medians = [.. samples.Select(s => s.Order().ElementAt(s.Count / 2))];
            var row = new List<string> { name, $"{medians[0]:F0}" };
            row.AddRange(medians.Skip(1).Select(m => $"{m:F0}"));
            row.AddRange(medians.Skip(1).Select(m => $"{medians[0] / m:F2}"));
            table.AddRow([.. row]);
        }
        console.Write(table);

        // Memory: 1M live small objects, Kmalloc first (a fresh heap), each peer after.
        var rss = new Table().AddColumn("1,000,000 live objects of 8..1024 B").AddColumn("RSS growth").AddColumn("x payload").AddColumn("given back after free (2 s)");
        int count = quick ? 200_000 : 1_000_000;
        var settle = TimeSpan.FromSeconds(quick ? 0.5 : 2);
        var km = PageLayerWorkloads.SmallObjectRss(new KmallocOps(), count, settle);
        rss.AddRow("Kmalloc", $"{km.LiveBytes >> 20} MiB", $"{(double)km.LiveBytes / km.Payload:F2}", $"{km.ReturnedFraction:P0}");
        foreach (NativePeer p in peers)
        {
            var r = PageLayerWorkloads.SmallObjectRss(new PeerOps(p), count, settle);
            rss.AddRow(p.Name, $"{r.LiveBytes >> 20} MiB ({(double)km.LiveBytes / r.LiveBytes:F2}x for Kmalloc)", $"{(double)r.LiveBytes / r.Payload:F2}", $"{r.ReturnedFraction:P0}");
        }
        console.Write(rss);

        var (nsPerPage, rssLeft) = PageLayerWorkloads.PurgeCycle(quick ? 5 : 20);
        console.MarkupLine($"purge cycle (64 x 1 MiB written, freed, Pages.Trim), advice {(Environment.GetEnvironmentVariable("KMEM_PURGE_ADVICE") == "free" ? "MADV_FREE" : "MADV_DONTNEED")}: " +
                           $"{nsPerPage:F0} ns per page, RSS left after the trim {rssLeft >> 20} MiB");

        if (big)
        {
            var fill = new Table().AddColumn("8 GiB of live Kmalloc(20000), then free all").AddColumn("s per GiB").AddColumn("extra mappings at the peak");
            var (ks, km2) = PageLayerWorkloads.FillAndFree(new KmallocOps(), 20000, 8L << 30);
            fill.AddRow("Kmalloc", $"{ks:F3}", $"{km2}");
            foreach (NativePeer p in peers.Where(p => p.Name == "glibc"))
            {
                var (gs, gm) = PageLayerWorkloads.FillAndFree(new PeerOps(p), 20000, 8L << 30);
                fill.AddRow($"glibc (Kmalloc {ks / gs:F2}x)", $"{gs:F3}", $"{gm}");
            }
            console.Write(fill);

            // 8 GiB of 64 B SlabCache objects, each written: overhead, and what stays after Shrink.
            long start = Pages.BytesHeld;
            var sw = System.Diagnostics.Stopwatch.StartNew();
            MemoryFootprint f = MemoryWorkload.Run((8L << 30) / 64, 64);
            console.MarkupLine($"8 GiB of live 64 B SlabCache objects: {f.OverheadPercent:F2}% over the payload, " +
                               $"{f.BytesAfterShrink} bytes held by the cache after Shrink, Pages.BytesHeld {start >> 20} -> {Pages.BytesHeld >> 20} MiB, {sw.Elapsed.TotalSeconds:F1} s");
        }
        console.MarkupLine($"{PageLayerWorkloads.Operations - opsBefore:N0} operations over all allocators");
        console.MarkupLine($"page layer: {Pages.Arenas} arenas, {Pages.BytesReserved >> 20} MiB reserved, {Pages.BytesHeld >> 20} MiB held, {Pages.PurgedBytes >> 20} MiB purged so far");
        return 0;
    }
}
