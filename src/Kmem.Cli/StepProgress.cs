using Spectre.Console;

namespace Kmem.Cli;

/// <summary>
/// What a long command says about its steps: a live progress display on a terminal, one
/// plain line per step anywhere else. Spectre's <see cref="Progress"/> on a console that
/// is not an interactive ANSI terminal (output redirected to a log or a pipe, CI) falls
/// back to printing "step: 0%" for every task it starts, which in a log is noise that
/// says nothing; the same test Spectre makes picks the plain lines here instead.
/// </summary>
internal sealed class StepProgress
{
    private readonly IAnsiConsole _console;
    private readonly ProgressContext? _live;
    private readonly int _total;
    private ProgressTask? _task;
    private int _started;

    private StepProgress(IAnsiConsole console, ProgressContext? live, int total)
    {
        _console = console;
        _live = live;
        _total = total;
    }

    /// <summary>True where Spectre would draw a live display (it checks the same two capabilities).</summary>
    public static bool IsLive(IAnsiConsole console) =>
        console.Profile.Capabilities.Interactive && console.Profile.Capabilities.Ansi;

    /// <summary>
    /// Runs <paramref name="body"/>, which calls <see cref="Step"/> as each step starts.
    /// <paramref name="total"/> &gt; 0: one bar over that many steps whose label is the
    /// current step; 0: a line of its own for each step.
    /// </summary>
    public static void Run(IAnsiConsole console, int total, Action<StepProgress> body)
    {
        if (!IsLive(console))
        {
            body(new StepProgress(console, null, total));
            return;
        }
        ProgressColumn[] columns = total > 0
            ? [new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn()]
            : [new TaskDescriptionColumn(), new ProgressBarColumn(), new SpinnerColumn()];
        console.Progress().Columns(columns).Start(ctx =>
        {
            var steps = new StepProgress(console, ctx, total);
            body(steps);
            steps.Finish();
        });
    }

    /// <summary>The previous step is done and <paramref name="description"/> starts.</summary>
    public void Step(string description)
    {
        _started++;
        if (_live == null)
        {
            _console.WriteLine(_total > 0 ? $"[{_started}/{_total}] {description}" : description);
            return;
        }
        if (_total > 0)
        {
            _task ??= _live.AddTask(description, maxValue: _total);
            _task.Value = _started - 1;
            _task.Description = Markup.Escape(description);
            return;
        }
        _task?.Increment(1);
        _task = _live.AddTask(Markup.Escape(description), maxValue: 1);
    }

    private void Finish()
    {
        if (_task == null)
            return;
        _task.Value = _task.MaxValue;
        if (_total > 0)
            _task.Description = "done";
    }
}
