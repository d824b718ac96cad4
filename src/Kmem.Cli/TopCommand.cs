using System.ComponentModel;
using System.Diagnostics.CodeAnalysis;
using System.Globalization;
using Spectre.Console;
using Spectre.Console.Cli;

namespace Kmem.Cli;

/// <summary>
/// -p, the process `kmem top` and `kmem slabinfo` read. Taken as text and parsed here:
/// Spectre's converter for an optional int answers "me" with "Failed to convert 'me' to
/// Nullable`1", which names a type instead of the mistake.
/// </summary>
internal abstract class ProcessSettings : CommandSettings
{
    /// <summary>-p as given.</summary>
    [CommandOption("-p|--process-id <PID>")]
    [Description("The .NET process to read, by id (dotnet-counters ps lists them). Required by top.")]
    public string? ProcessIdText { get; init; }

    /// <summary>-p's process id; null when -p was not given (or is not a number, which Validate refuses).</summary>
    public int? ProcessId =>
        int.TryParse(ProcessIdText, NumberStyles.AllowLeadingWhite | NumberStyles.AllowTrailingWhite, CultureInfo.InvariantCulture, out int pid)
            ? pid
            : null;

    public override ValidationResult Validate() =>
        ProcessIdText is not null && ProcessId is not > 0
            ? ValidationResult.Error($"-p takes a process id, a number more than 0: '{ProcessIdText}' is not one")
            : ValidationResult.Success();
}

/// <summary>The options of `kmem top`.</summary>
internal sealed class TopSettings : ProcessSettings
{
    [CommandOption("-i|--interval <SECONDS>")]
    [Description("Seconds between refreshes: how often the process collects its Kmem meter for kmem (0.1 to 3600).")]
    [DefaultValue(1.0)]
    public double Interval { get; init; } = 1;

    // An int, not an int?: Spectre would answer `--count x` with "Failed to convert 'x' to Nullable`1".
    [CommandOption("-n|--count <N>")]
    [Description("Stop after N refreshes (for scripts); 0, the default: until Ctrl+C or the process exits.")]
    [DefaultValue(0)]
    public int Count { get; init; }

    [CommandOption("-s|--sort <KEY>")]
    [Description("Order of the caches: memory (held, the default), active, total (objects, most first) or name.")]
    [DefaultValue(TopSort.Memory)]
    public TopSort Sort { get; init; } = TopSort.Memory;

    public override ValidationResult Validate()
    {
        // A missing -p is refused by TopCommand.Validate, after KmemCommand has refused any
        // unknown option: `kmem top --bogus` should hear of --bogus first.
        if (base.Validate() is { Successful: false } error)
            return error;
        // MetricsEventSource raises a smaller interval to 0.1 s by itself; say so instead.
        if (Interval is < 0.1 or > 3600 or double.NaN)
            return ValidationResult.Error("--interval must be from 0.1 to 3600 seconds");
        if (Count < 0)
            return ValidationResult.Error("--count must be 0 (no limit) or more");
        return ValidationResult.Success();
    }
}

/// <summary>
/// `kmem top -p PID`: a slabtop for another .NET process. It attaches through the runtime's
/// diagnostics channel, follows the process's Kmem meter (<see cref="KmemMetricsSession"/>)
/// and shows its caches at every collection: in place on a terminal, one plain table per
/// refresh anywhere else. It ends on Ctrl+C, after --count refreshes, or when the process
/// exits (exit 0); a process it cannot attach to is exit 2.
/// </summary>
[SuppressMessage("Performance", "CA1812", Justification = "Spectre.Console.Cli creates it.")]
internal sealed class TopCommand(IAnsiConsole console) : KmemCommand<TopSettings>
{
    /// <summary>
    /// How long the first values may take beyond one interval: the process attaches in
    /// milliseconds, but one that is swapped out or busy with a full GC may be slow to run
    /// its aggregation thread. Past this, something holds the EventSource that did not say
    /// so: better an error than a blank screen.
    /// </summary>
    internal static readonly TimeSpan FirstValuesGrace = TimeSpan.FromSeconds(10);

    public override ValidationResult Validate(CommandContext context, TopSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ValidationResult result = base.Validate(context, settings);
        if (!result.Successful || settings.ProcessId is not null)
            return result;
        return ValidationResult.Error("kmem top needs -p PID, the id of a running .NET process that uses Kmem (dotnet-counters ps lists them)");
    }

    public override int Execute(CommandContext context, TopSettings settings, CancellationToken cancellationToken)
    {
        var interval = TimeSpan.FromSeconds(settings.Interval);
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        // Ctrl+C stops the refreshes, and the live display gives the terminal back (cursor
        // shown, last frame kept) instead of the process dying in the middle of a frame.
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;
            stop.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            using KmemMetricsSession session = KmemMetricsSession.Start(settings.ProcessId!.Value, interval);
            string seconds = settings.Interval.ToString("0.0##", CultureInfo.InvariantCulture);
            string? end = null;
            if (!StepProgress.IsLive(console))
            {
                end = Run(session, settings.Count, snapshot => console.Write(TopView.Render(session.Target, snapshot, settings.Sort, session.Warning, null)), stop.Token);
            }
            else
            {
                string footer = $"every {seconds} s, by {settings.Sort.ToString().ToLowerInvariant()}; Ctrl+C to stop";
                console.Live(new Text($"kmem top: attached to process {session.Target}, first values in {seconds} s"))
                    .AutoClear(false)
                    .Overflow(VerticalOverflow.Ellipsis)
                    .Cropping(VerticalOverflowCropping.Bottom)
                    .Start(ctx => end = Run(session, settings.Count, snapshot =>
                    {
                        ctx.UpdateTarget(TopView.Render(session.Target, snapshot, settings.Sort, session.Warning, footer));
                        ctx.Refresh();
                    }, stop.Token));
            }
            // After the live display, if any: its last frame stays above this line.
            if (end is not null)
                console.WriteLine(end);
            return 0;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>
    /// Shows refreshes until one of the ends: <paramref name="count"/> of them (0: no
    /// limit), Ctrl+C, or the target's exit, which it returns the line to say for.
    /// </summary>
    private static string? Run(KmemMetricsSession session, int count, Action<RemoteSnapshot> show, CancellationToken stop)
    {
        for (int refreshes = 0; ;)
        {
            // After the first values, a late refresh is waited for: a process paused in a
            // debugger, or stopped with SIGSTOP, is not gone.
            TimeSpan timeout = refreshes == 0 ? session.Interval + FirstValuesGrace : Timeout.InfiniteTimeSpan;
            SessionRead read = session.Read(timeout, stop);
            switch (read.Kind)
            {
                case SessionReadKind.Snapshot:
                    show(read.Snapshot!);
                    if (++refreshes == count)
                        return null;
                    break;
                case SessionReadKind.TargetExited:
                    return $"kmem top: process {session.Target} {read.Note ?? "exited"}";
                case SessionReadKind.TimedOut:
                    throw new TargetProcessException($"process {session.Target} sent no metrics within {timeout.TotalSeconds:0.#} s "
                        + "of attaching: its System.Diagnostics.Metrics EventSource did not answer");
                default:
                    return null;   // Ctrl+C
            }
        }
    }
}
