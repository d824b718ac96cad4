using Kmem.Cli;
using Spectre.Console;
using Spectre.Console.Cli;

// kmem demo | stress | bench | top | slabinfo; `kmem --help` and `kmem COMMAND --help` list the options (KmemApp).
// `kmem` alone prints the help and exits 0, as Spectre.Console.Cli does for a bare root: asking
// what the tool does is not an error, and an error code there would only break `kmem | less`.
if (Console.IsOutputRedirected)
    AnsiConsole.Profile.Width = 140;   // logs and CI: no terminal to wrap the tables to
var app = new CommandApp();
app.Configure(KmemApp.Configure);
return app.Run(args);
