using System.ComponentModel;
using System.Diagnostics;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using System.Runtime.InteropServices;
using Kmem.Workloads;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Kmem.Cli;

/// <summary>The options of `kmem demo`.</summary>
internal sealed class DemoSettings : CommandSettings
{
    [CommandOption("-q|--quick")]
    [Description("Shorter runs: 0.6 s each after 0.15 s of warm-up instead of 2 s after 0.3 s; about half a minute in all.")]
    public bool Quick { get; init; }

    [CommandOption("-s|--seconds <SECONDS>")]
    [Description("Seconds measured per run (32 runs), instead of 2 (0.6 with --quick). The warm-up stays as the mode sets it.")]
    public double? Seconds { get; init; }

    [CommandOption("--json <FILE>")]
    [Description("Also write results.json (the run records, with the machine, runtime, commit and parameters) to FILE; the folder always gets it.")]
    public string? JsonPath { get; init; }

    [CommandOption("-o|--out <DIR>")]
    [Description("Folder for results.json, the charts (SVG and PNG) and summary.md; default kmem-demo-results/<time>/.")]
    public string? OutFolder { get; init; }

    public override ValidationResult Validate() =>
        Seconds is <= 0 or > 3600 or double.NaN
            ? ValidationResult.Error("--seconds must be more than 0 and at most 3600")
            : ValidationResult.Success();
}

/// <summary>
/// `kmem demo`: the seed series' experiment. Both users of per-CPU memory (an mm-like
/// and a tc-like object) run in every mode at 1, 2, 4 and 8 threads; the cover letter's
/// table, patch 4's lock table and the issue's targets are printed; results, charts and
/// a summary are written under a folder it names.
/// </summary>
[SuppressMessage("Performance", "CA1812", Justification = "Spectre.Console.Cli creates it.")]
internal sealed class DemoCommand(IAnsiConsole console) : KmemCommand<DemoSettings>
{
    public override int Execute(CommandContext context, DemoSettings settings, CancellationToken cancellationToken)
    {
        bool quick = settings.Quick;
        TimeSpan duration = TimeSpan.FromSeconds(settings.Seconds ?? (quick ? 0.6 : 2.0));
        TimeSpan warmup = TimeSpan.FromSeconds(quick ? 0.15 : 0.3);
        DemoEnvironment env = DemoEnvironment.Current();
        var started = Stopwatch.StartNew();
        string machine = string.Create(CultureInfo.InvariantCulture,
            $"{env.Machine.Cores} cores ({env.Machine.PossibleCpus} possible CPUs), {env.Machine.Cpu}, {RuntimeInformation.OSDescription}, .NET {Environment.Version}, commit {env.ShortCommit}; "
            + $"{duration.TotalSeconds:0.0##} s per run after {warmup.TotalSeconds:F2} s warm-up");
        console.MarkupLine($"[bold]kmem demo[/]{(quick ? " --quick" : "")}: reviving the slab destructor (seed 002), measured");
        console.MarkupLine($"[grey]{Markup.Escape(machine)}[/]");
        console.MarkupLine("[grey]modes: baseline = per-CPU memory allocated in every lifetime; ctor-dtor = kept by the slab constructor/destructor; "
            + "no-percpu = the same object without per-CPU memory (the floor); percpu-cache = a per-CPU allocator caching areas itself[/]");

        List<SeedRunResult> results = [];
        StepProgress.Run(console, SeedExperiment.Runs, steps =>
            results = SeedExperiment.Run(duration, warmup,
                (w, mode, t) => steps.Step($"{w}-like, {mode}, {t} thread{(t == 1 ? "" : "s")}")));
        TimeSpan elapsed = started.Elapsed;

        foreach (string w in SeedWorkload.Workloads)
        {
            console.Write(DemoReport.Throughput(results, w));
            console.WriteLine(DemoReport.LockTable(results, w));
        }
        List<DemoReport.Target> targets = DemoReport.Targets(results);
        console.Write(DemoReport.TargetTable(targets));
        console.MarkupLine("[grey]The series measured a kernel: +4% exec() throughput on 1 thread, +4.56% on 24 threads, +33% on 192 CPUs, "
            + "-26% system time for tc filters. Here a lifetime is the object's own work alone (no page tables, no fork), "
            + "on 2 cores, so the mutex's share of a lifetime, and so the gain, is larger; see docs/benchmarks.md.[/]");

        DemoOutput.Results envelope = DemoOutput.Envelope(DemoOutput.Records(results), env,
            new DemoOutput.Parameters(quick, duration.TotalSeconds, warmup.TotalSeconds, SeedExperiment.ThreadCounts, SeedWorkload.Workloads, SeedWorkload.Modes),
            elapsed);
        string folder = settings.OutFolder ?? Path.Combine("kmem-demo-results", DateTime.Now.ToString("yyyyMMdd-HHmmss", CultureInfo.InvariantCulture));
        List<string> files = DemoOutput.WriteFolder(folder, envelope, results, targets, machine);
        if (settings.JsonPath is string jsonPath)
        {
            DemoOutput.WriteJson(jsonPath, envelope);
            files.Add(jsonPath);
        }
        console.MarkupLine($"results written: {Markup.Escape(string.Join(", ", files))}");

        long failures = results.Sum(r => r.CheckFailures);
        if (failures != 0)
        {
            console.MarkupLine($"[red]{failures} checks failed: a counter not back to zero at teardown, or a memory group left charged[/]");
            return 1;
        }
        console.MarkupLine("[green]every lifetime checked: counters back to zero, every charge given back[/]");
        return 0;
    }
}
