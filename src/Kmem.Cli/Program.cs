using Kmem.Cli;
using Spectre.Console;

// kmem demo [--quick] [--json FILE] [--out DIR] | kmem bench [--pages] [--quick] | kmem stress [--quick] | kmem slabinfo
string command = args.Length > 0 ? args[0] : "help";
if (Console.IsOutputRedirected)
    AnsiConsole.Profile.Width = 140;   // logs and CI: no terminal to wrap the tables to
bool quick = args.Contains("--quick");
try
{
    return command switch
    {
        "demo" => DemoCommand.Run(quick, Option("--json"), Option("--out")),
        "stress" => StressCommand.Run(quick),
        "bench" => args.Contains("--pages") ? PagesBenchCommand.Run(quick, args.Contains("--kmalloc-only"), args.Contains("--big")) : BenchCommand.Run(quick),
        "slabinfo" => SlabInfoCommand.Run(),
        _ => Help(),
    };
}
catch (Exception e) when (e is Kmem.SlabUsageException or Kmem.SlabAllocationException)
{
    AnsiConsole.MarkupLineInterpolated($"[red]kmem: {e.Message}[/]");
    return 2;
}

string? Option(string name)
{
    int i = Array.IndexOf(args, name);
    return i >= 0 && i + 1 < args.Length ? args[i + 1] : null;
}

static int Help()
{
    AnsiConsole.MarkupLine("[bold]kmem[/]: a slab allocator for .NET after Linux SLUB");
    AnsiConsole.MarkupLine("  [green]kmem demo[/] [[--quick]] [[--json FILE]] [[--out DIR]]");
    AnsiConsole.MarkupLine("                            the seed series' experiment: per-CPU memory kept by slab constructors and destructors");
    AnsiConsole.MarkupLine("  [green]kmem stress[/] [[--quick]]  a mixed multi-threaded workload with cross-thread frees, then the slabinfo table");
    AnsiConsole.MarkupLine("  [green]kmem bench[/] [[--quick]]   throughput, scaling and memory against the floor and peers");
    AnsiConsole.MarkupLine("  [green]kmem bench --pages[/] [[--quick]] [[--kmalloc-only]] [[--big]]  large blocks and realloc against glibc, mimalloc, jemalloc, tcmalloc");
    AnsiConsole.MarkupLine("  [green]kmem slabinfo[/]           the caches of this process");
    return 1;
}
