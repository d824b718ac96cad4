using System.Reflection;
using System.Runtime.ExceptionServices;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Kmem.Cli;

/// <summary>
/// The `kmem` command line, configured in one place so that Program.cs and the tests run
/// the same commands, options and error handling.
/// </summary>
public static class KmemApp
{
    /// <summary>
    /// The exit code of a command line kmem cannot run: an unknown command or option, a
    /// bad or missing value, options that do not go together, or misuse of the allocator
    /// that it reports (<see cref="SlabUsageException"/>, <see cref="SlabAllocationException"/>),
    /// or a process `kmem top` and `kmem slabinfo -p` cannot read (<see cref="TargetProcessException"/>).
    /// 1 stays for a run whose checks failed.
    /// </summary>
    public const int UsageError = 2;

    private static readonly Lazy<IAnsiConsole> s_stderr = new(() =>
        AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) }));

    /// <summary>The version `kmem --version` prints: Kmem.Cli's informational version.</summary>
    public static string Version { get; } =
        typeof(KmemApp).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion
        ?? typeof(KmemApp).Assembly.GetName().Version?.ToString()
        ?? "unknown";

    /// <summary>Adds kmem's commands and settings to <paramref name="config"/>.</summary>
    public static void Configure(IConfigurator config)
    {
        ArgumentNullException.ThrowIfNull(config);
        config.SetApplicationName("kmem");
        // Spectre prints the version as markup, and the informational version may hold
        // brackets; UseAssemblyInformationalVersion would read the entry assembly, which
        // under the tests is the test host.
        config.SetApplicationVersion(Markup.Escape(Version));
        // Parsing stays relaxed (Spectre's default), which files unknown options away as
        // "remaining arguments"; KmemCommand refuses those. Strict parsing would refuse them
        // itself, but when a line fails to parse it retries with the default command's name
        // inserted at each position, and `demo --out` then parses with that name as the
        // folder: the demo ran into ./__default_command instead of saying --out lacks a value.
#if DEBUG
        // The tests run in Debug: an example that no longer parses fails them.
        config.ValidateExamples();
#endif
        // Spectre turns every exception into exit code -1 (255); the handler gives a
        // command line it cannot run the code 2 that scripts expect of a usage error. The
        // message goes to standard error, unless a console was configured (the tests').
        config.SetExceptionHandler((e, _) => HandleException(config.Settings.Console ?? s_stderr.Value, e));

        config.AddCommand<DemoCommand>("demo")
            .WithDescription("The seed series' experiment: per-CPU memory kept by slab constructors and destructors, "
                + "an mm-like and a tc-like object at 1, 2, 4 and 8 threads in four modes; writes results.json, charts and summary.md.")
            .WithExample("demo", "--quick")
            .WithExample("demo", "--out", "results", "--json", "runs.json");
        config.AddCommand<StressCommand>("stress")
            .WithDescription("A mixed multi-threaded workload with cross-thread frees that checks every object, "
                + "then the slabinfo table and the memory left after Shrink.")
            .WithExample("stress", "--quick")
            .WithExample("stress", "--threads", "8", "--seconds", "10");
        config.AddCommand<BenchCommand>("bench")
            .WithDescription("Throughput, scaling and memory against a bare free list and NativeMemory, as ratios within one run; "
                + "--pages: the page layer against the C allocators installed.")
            .WithExample("bench", "--quick")
            .WithExample("bench", "--pages", "--kmalloc-only", "--quick");
        config.AddCommand<TopCommand>("top")
            .WithDescription("A live slabtop of another .NET process's Kmem caches, read from its Kmem meter over the runtime's "
                + "diagnostics channel: objects, slabs and memory per cache, and the page layer's totals.")
            .WithExample("top", "-p", "1234")
            .WithExample("top", "-p", "1234", "--sort", "active", "--interval", "2")
            .WithExample("top", "-p", "1234", "--count", "3");
        config.AddCommand<SlabInfoCommand>("slabinfo")
            .WithDescription("With -p PID: another .NET process's slabinfo table, once, from its Kmem meter. "
                + "Without: how to see the table (kmem has no caches of its own).")
            .WithExample("slabinfo", "-p", "1234")
            .WithExample("slabinfo");
    }

    private static int HandleException(IAnsiConsole console, Exception e)
    {
        switch (e)
        {
            case CommandAppException { Pretty: { } pretty }:
                console.Write(pretty);
                return UsageError;
            case CommandAppException:
                console.MarkupLineInterpolated($"[red]Error:[/] {e.Message}");
                return UsageError;
            case TargetProcessException:
                // The process named cannot be read: as much a line kmem cannot run as a bad option.
                console.MarkupLineInterpolated($"[red]kmem: {e.Message}[/]");
                return UsageError;
            case SlabUsageException or SlabAllocationException:
                console.MarkupLineInterpolated($"[red]kmem: {e.Message}[/]");
                return UsageError;
            default:
                // A bug: let it crash with its stack trace, as it did before the port,
                // rather than pass for a usage error.
                ExceptionDispatchInfo.Throw(e);
                return 1;
        }
    }
}
