using Kmem.Cli;
using Spectre.Console.Testing;

namespace Kmem.Cli.Tests;

/// <summary>
/// Long commands' progress: in a log, one plain line per step and none of the "step: 0%"
/// lines Spectre's fallback renderer prints; on a terminal, the live display.
/// </summary>
public class StepProgressTests
{
    private static void ThreeSteps(StepProgress steps)
    {
        steps.Step("first [1]");
        steps.Step("second");
        steps.Step("third");
    }

    [Fact]
    public void Away_from_a_terminal_a_bar_over_known_steps_is_a_numbered_line_per_step()
    {
        using var console = new TestConsole();
        Assert.False(StepProgress.IsLive(console));
        StepProgress.Run(console, 3, ThreeSteps);
        Assert.Equal(["[1/3] first [1]", "[2/3] second", "[3/3] third"], console.Lines);
    }

    [Fact]
    public void Away_from_a_terminal_a_row_per_step_is_a_plain_line_per_step()
    {
        using var console = new TestConsole();
        StepProgress.Run(console, 0, ThreeSteps);
        Assert.Equal(["first [1]", "second", "third"], console.Lines);
    }

    [Theory]
    [InlineData(3)]
    [InlineData(0)]
    public void On_a_terminal_the_steps_are_drawn_live_and_not_printed_as_lines(int total)
    {
        using var console = new TestConsole();
        console.Interactive().SupportsAnsi(true);
        Assert.True(StepProgress.IsLive(console));
        StepProgress.Run(console, total, ThreeSteps);
        Assert.DoesNotContain(console.Lines, l => l is "[1/3] first [1]" or "first [1]");
        // The display's last frame: the one bar says "done"; each step keeps a row of its own.
        Assert.Contains(total > 0 ? "done" : "first [1]", console.Output);
    }
}
