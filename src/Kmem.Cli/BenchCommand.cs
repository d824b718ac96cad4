using System.ComponentModel;
using System.Diagnostics.CodeAnalysis;
using System.Runtime.InteropServices;
using Kmem.Workloads;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Kmem.Cli;

/// <summary>The options of `kmem bench`.</summary>
internal sealed class BenchSettings : CommandSettings
{
    [CommandOption("-q|--quick")]
    [Description("Shorter runs: 0.5 s per figure instead of 2 s (with --pages: 3 rounds of 0.1 s instead of 9 of 0.3 s).")]
    public bool Quick { get; init; }

    [CommandOption("--pages")]
    [Description("The page layer instead: large blocks, small and medium sizes, realloc and RSS against glibc, mimalloc, jemalloc and tcmalloc where they are installed.")]
    public bool Pages { get; init; }

    [CommandOption("--kmalloc-only")]
    [Description("With --pages: Kmalloc alone, no peers (to count its own system calls with strace).")]
    public bool KmallocOnly { get; init; }

    [CommandOption("--big")]
    [Description("With --pages: also fill 8 GiB with Kmalloc(20000) (and glibc's malloc) and with 64 B SlabCache objects, then free it: minutes, and 2 GiB of RSS for glibc.")]
    public bool Big { get; init; }

    public override ValidationResult Validate() => (Pages, KmallocOnly, Big) switch
    {
        (false, true, _) => ValidationResult.Error("--kmalloc-only needs --pages"),
        (false, _, true) => ValidationResult.Error("--big needs --pages"),
        _ => ValidationResult.Success(),
    };
}

/// <summary>
/// `kmem bench`: the issue's figures as ratios taken in one run on this machine (it is
/// shared and noisy; only ratios within one run mean much). BenchmarkDotNet's figures
/// in docs/benchmarks.md are the reference; this is the quick look. With --pages it runs
/// <see cref="PagesBenchCommand"/> instead.
/// </summary>
[SuppressMessage("Performance", "CA1812", Justification = "Spectre.Console.Cli creates it.")]
internal sealed class BenchCommand(IAnsiConsole console) : KmemCommand<BenchSettings>
{
    private sealed record Figure(string Name, string Value, string Target, bool Met);

    public override int Execute(CommandContext context, BenchSettings settings, CancellationToken cancellationToken) =>
        settings.Pages ? PagesBenchCommand.Run(console, settings.Quick, settings.KmallocOnly, settings.Big) : Run(settings.Quick);

    private int Run(bool quick)
    {
        var d = TimeSpan.FromSeconds(quick ? 0.5 : 2);
        var figures = new List<Figure>();
        console.MarkupLine($"[bold]kmem bench[/]{(quick ? " --quick" : "")}: {Environment.ProcessorCount} cores, " +
                           $"{RuntimeInformation.FrameworkDescription}, {RuntimeInformation.OSDescription}");

        var single = new Dictionary<string, double>();
        var scaling = new Dictionary<int, double>();
        var producerConsumer = new Dictionary<string, double>();
        MemoryFootprint? footprint = null;
        var lifecycle = new Dictionary<(string Mode, int Threads), LifecycleResult>();

        StepProgress.Run(console, 0, steps =>
        {
            foreach (var (name, run) in SingleThreadWorkload.Runs(64))
            {
                steps.Step($"1 thread, 64 B: {name}");
                single[name] = run(d);
            }
            using (var slab = new SlabCacheAllocator(64))
            {
                foreach (int threads in new[] { 1, 2, 8 })
                {
                    steps.Step($"SlabCache, {threads} thread(s)");
                    scaling[threads] = ThroughputWorkloads.Scaling(slab, threads, d).OpsPerSecond;
                }
            }
            foreach (var make in Allocator.All(64))
            {
                using var allocator = make();
                steps.Step($"producer/consumer: {allocator.Name}");
                producerConsumer[allocator.Name] = ThroughputWorkloads.ProducerConsumer(allocator, d).OpsPerSecond;
            }
            foreach (int threads in new[] { 1, 2 })
            {
                foreach (string mode in LifecycleWorkload.Modes)
                {
                    steps.Step($"expensive object state, {mode}, {threads} thread(s)");
                    lifecycle[(mode, threads)] = LifecycleWorkload.Run(mode, threads, d);
                }
            }
            steps.Step("memory: 1M live 64 B objects");
            footprint = MemoryWorkload.Run(1_000_000, 64);
        });

        double floor = single["bare free list (floor)"];
        double Ns(string name) => 1e9 / single[name];
        double slabRatio = floor / single["SlabCache"];
        double kmallocRatio = floor / single["Kmalloc"];
        double vsNative = single["SlabCache"] / single["NativeMemory"];
        figures.Add(new("SlabCache 64 B pair / floor", $"{slabRatio:F2}x ({Ns("SlabCache"):F1} vs {Ns("bare free list (floor)"):F1} ns)", "<= 2.0x", slabRatio <= 2.0));
        figures.Add(new("SlabCache speed-up over NativeMemory", $"{vsNative:F2}x ({Ns("NativeMemory"):F1} ns native)", ">= 3x", vsNative >= 3));
        figures.Add(new("Kmalloc(64) pair / floor", $"{kmallocRatio:F2}x ({Ns("Kmalloc"):F1} ns)", "<= 2.5x", kmallocRatio <= 2.5));
        double two = scaling[2] / scaling[1], eight = scaling[8] / scaling[1];
        figures.Add(new("2 threads / 1 thread", $"{two:F2}x ({scaling[1] / 1e6:F0} -> {scaling[2] / 1e6:F0} M pairs/s)", ">= 1.8x", two >= 1.8));
        figures.Add(new("8 threads / 1 thread", $"{eight:F2}x ({scaling[8] / 1e6:F0} M pairs/s)", ">= 1.6x", eight >= 1.6));
        foreach (string name in new[] { "SlabCache", "Kmalloc" })
        {
            double r = producerConsumer[name] / producerConsumer["NativeMemory"];
            figures.Add(new($"producer/consumer {name} / NativeMemory", $"{r:F2}x ({producerConsumer[name] / 1e6:F1} vs {producerConsumer["NativeMemory"] / 1e6:F1} M/s)", ">= 1.0x", r >= 1.0));
        }
        figures.Add(new("1M live 64 B objects: overhead", $"{footprint!.OverheadPercent:F2}% ({SlabInfoView.Bytes(footprint.BytesWhileLive)})", "<= 10%", footprint.OverheadPercent <= 10));
        figures.Add(new("after free + Shrink: slab bytes held", SlabInfoView.Bytes(footprint.BytesAfterShrink), "< 1 MiB", footprint.BytesAfterShrink < 1 << 20));

        foreach (int threads in new[] { 1, 2 })
        {
            LifecycleResult perUse = lifecycle[("per-use", threads)], ctor = lifecycle[("ctor-dtor", threads)], plain = lifecycle[("plain", threads)];
            double fall = ctor.ExpensivePerCycle == 0 ? double.PositiveInfinity : perUse.ExpensivePerCycle / ctor.ExpensivePerCycle;
            figures.Add(new($"state work per cycle, per-use / ctor-dtor, {threads}T",
                $"{fall:G3}x ({perUse.ExpensivePerCycle:F2} vs {ctor.ExpensivePerCycle:G2})",
                $">= {ctor.ObjectsPerSlab}x (objects/slab)", fall >= ctor.ObjectsPerSlab));
            double slower = plain.CyclesPerSecond / ctor.CyclesPerSecond;
            figures.Add(new($"ctor-dtor time per cycle / plain, {threads}T",
                $"{slower:F2}x ({ctor.CyclesPerSecond / 1e6:F1} vs {plain.CyclesPerSecond / 1e6:F1} M/s; per-use {perUse.CyclesPerSecond / 1e6:F1})",
                "<= 1.3x", slower <= 1.3));
        }

        var table = new Table().Border(TableBorder.Rounded).Title("kmem bench");
        table.AddColumns("figure", "measured", "target", "");
        foreach (var f in figures)
            table.AddRow(f.Name, f.Value, f.Target, f.Met ? "[green]met[/]" : "[yellow]missed[/]");
        console.Write(table);
        return 0;
    }
}
