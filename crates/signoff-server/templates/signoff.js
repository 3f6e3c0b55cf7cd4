// signoff's own pages: each <time datetime> in the reader's language and
// time zone. The server already wrote correct English ("3 minutes ago",
// UTC in the title), so without this script, or without Intl, nothing is
// wrong. Served as {prefix}/signoff.js; the page's CSP allows no other script.
(function () {
  "use strict";
  if (!window.Intl || !Intl.RelativeTimeFormat || !Intl.DateTimeFormat) {
    return;
  }
  var lang = navigator.language || "en";
  var relative, absolute;
  try {
    relative = new Intl.RelativeTimeFormat(lang, { numeric: "auto" });
    absolute = new Intl.DateTimeFormat(lang, {
      dateStyle: "medium",
      timeStyle: "short"
    });
  } catch (e) {
    return;
  }
  var units = [
    ["year", 365 * 86400],
    ["month", 30 * 86400],
    ["week", 7 * 86400],
    ["day", 86400],
    ["hour", 3600],
    ["minute", 60]
  ];
  function words(at) {
    var seconds = (at.getTime() - Date.now()) / 1000;
    // A clock a little ahead of the server's: still "now".
    if (Math.abs(seconds) < 60) {
      return relative.format(0, "second");
    }
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(seconds) >= units[i][1]) {
        return relative.format(Math.round(seconds / units[i][1]), units[i][0]);
      }
    }
    // Not reached: the last unit is the minute, and |seconds| >= 60 here.
    return "";
  }
  function render() {
    var times = document.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var at = new Date(times[i].getAttribute("datetime"));
      if (isNaN(at.getTime())) {
        continue;
      }
      times[i].textContent = words(at);
      times[i].title = absolute.format(at);
    }
  }
  render();
  setInterval(render, 30000);
})();
