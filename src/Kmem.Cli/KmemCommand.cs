using Spectre.Console;
using Spectre.Console.Cli;

namespace Kmem.Cli;

/// <summary>
/// A kmem command: it refuses whatever the parser set aside as "remaining arguments",
/// which is where relaxed parsing puts unknown options (see <see cref="KmemApp.Configure"/>
/// for why parsing is relaxed) and where the words after `--` go. No kmem command takes
/// such arguments, so any of them is a mistake the user should hear of, not an option
/// silently ignored.
/// </summary>
internal abstract class KmemCommand<TSettings> : Command<TSettings>
    where TSettings : CommandSettings
{
    public override ValidationResult Validate(CommandContext context, TSettings settings)
    {
        ArgumentNullException.ThrowIfNull(context);
        string command = $"kmem {context.Name}";
        if (context.Remaining.Parsed.FirstOrDefault() is { } option)
            return ValidationResult.Error($"Unknown option '{option.Key}' ({command} --help lists the options)");
        if (context.Remaining.Raw.Count > 0)
            return ValidationResult.Error($"Unexpected argument '{context.Remaining.Raw[0]}': {command} takes none");
        return base.Validate(context, settings);
    }
}
