using Kmem.Cli;
using Spectre.Console;

// kmem demo | kmem bench [--quick] | kmem slabinfo
string command = args.Length > 0 ? args[0] : "help";
if (Console.IsOutputRedirected)
    AnsiConsole.Profile.Width = 140;   // logs and CI: no terminal to wrap the tables to
bool quick = args.Contains("--quick");
try
{
    return command switch
    {
        "demo" => DemoCommand.Run(quick),
        "bench" => BenchCommand.Run(quick),
        "slabinfo" => SlabInfoCommand.Run(),
        _ => Help(),
    };
}
catch (Exception e) when (e is Kmem.SlabUsageException or Kmem.SlabAllocationException)
{
    AnsiConsole.MarkupLineInterpolated($"[red]kmem: {e.Message}[/]");
    return 2;
}

static int Help()
{
    AnsiConsole.MarkupLine("[bold]kmem[/]: a slab allocator for .NET after Linux SLUB");
    AnsiConsole.MarkupLine("  [green]kmem demo[/] [[--quick]]    a mixed multi-threaded workload, then the slabinfo table");
    AnsiConsole.MarkupLine("  [green]kmem bench[/] [[--quick]]   throughput, scaling and memory against the floor and peers");
    AnsiConsole.MarkupLine("  [green]kmem slabinfo[/]           the caches of this process");
    return 1;
}
