using System.ComponentModel;
using System.Diagnostics.CodeAnalysis;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Kmem.Cli;

/// <summary>The options of `kmem slabinfo`.</summary>
internal sealed class SlabInfoSettings : ProcessSettings
{
    [CommandOption("--timeout <SECONDS>")]
    [Description("With -p: how long to wait for the process's values, instead of 10 s.")]
    public double? Timeout { get; init; }

    public override ValidationResult Validate()
    {
        if (base.Validate() is { Successful: false } error)
            return error;
        if (Timeout is not null && ProcessId is null)
            return ValidationResult.Error("--timeout needs -p");
        if (Timeout is <= 0 or > 3600 or double.NaN)
            return ValidationResult.Error("--timeout must be more than 0 and at most 3600 seconds");
        return ValidationResult.Success();
    }
}

/// <summary>
/// `kmem slabinfo -p PID`: one /proc/slabinfo-style table of another process's caches, from
/// the first complete collection of its Kmem meter (<see cref="KmemMetricsSession"/>).
/// Without -p there is nothing to show: slab caches live inside the process that creates
/// them, and this process creates none, so a table of its own would always be empty, which
/// reads as "the allocator holds nothing" when it says nothing at all. It says so instead,
/// and shows the ways to see a real table.
/// </summary>
[SuppressMessage("Performance", "CA1812", Justification = "Spectre.Console.Cli creates it.")]
internal sealed class SlabInfoCommand(IAnsiConsole console) : KmemCommand<SlabInfoSettings>
{
    /// <summary>What the command prints as the way to get the table from code.</summary>
    public const string CodeExample = "Console.WriteLine(Kmem.SlabInfo.Format());";

    /// <summary>
    /// The collection interval asked of the target for the one snapshot: the values of
    /// observable instruments do not depend on it, only how soon the first one comes.
    /// </summary>
    internal static readonly TimeSpan SnapshotInterval = TimeSpan.FromSeconds(0.5);

    /// <summary>The exit code when the process has no Kmem meter: nothing found, as grep's 1.</summary>
    public const int NoKmemMeter = 1;

    public override int Execute(CommandContext context, SlabInfoSettings settings, CancellationToken cancellationToken)
    {
        if (settings.ProcessId is int pid)
            return Snapshot(pid, TimeSpan.FromSeconds(settings.Timeout ?? 10), cancellationToken);

        console.WriteLine("kmem slabinfo: slab caches live in the process that creates them; kmem has none of its own.");
        console.WriteLine("To read a running program's table, from the Kmem meter it publishes:");
        console.WriteLine("    kmem slabinfo -p PID    // once; kmem top -p PID to watch it");
        console.WriteLine("To print it from that program:");
        console.WriteLine($"    {CodeExample}    // /proc/slabinfo-style text; Kmem.SlabInfo.Snapshot() for the figures");
        console.WriteLine("To see it over a real workload: kmem stress --quick (the table while its objects are live).");
        return 0;
    }

    private int Snapshot(int pid, TimeSpan timeout, CancellationToken cancellationToken)
    {
        using KmemMetricsSession session = KmemMetricsSession.Start(pid, SnapshotInterval);
        DateTime deadline = DateTime.UtcNow + SnapshotInterval + timeout;
        while (true)
        {
            TimeSpan left = deadline - DateTime.UtcNow;
            SessionRead read = session.Read(left > TimeSpan.Zero ? left : TimeSpan.Zero, cancellationToken);
            switch (read.Kind)
            {
                case SessionReadKind.Snapshot when read.Snapshot!.HasKmemMeter && read.Snapshot.PagesHeld is null:
                    // The meter was published during this collection, after its callbacks
                    // ran: the next collection has its values (the page figures always come).
                    continue;
                case SessionReadKind.Snapshot:
                    // Raw: a Text would wrap the lines at the terminal's width, and this is a
                    // table for scripts as much as for eyes.
                    console.Profile.Out.Writer.Write(TopView.SlabInfoText(session.Target, read.Snapshot));
                    console.Profile.Out.Writer.Flush();
                    return read.Snapshot.HasKmemMeter ? 0 : NoKmemMeter;
                case SessionReadKind.TargetExited:
                    throw new TargetProcessException($"process {session.Target} exited before its metrics came");
                case SessionReadKind.TimedOut:
                    throw new TargetProcessException($"process {session.Target} sent no metrics within {timeout.TotalSeconds:0.#} s: "
                        + "its System.Diagnostics.Metrics EventSource did not answer");
                default:
                    return KmemApp.UsageError;   // cancelled
            }
        }
    }
}
