package slack

import (
	"fmt"
	"strings"
	"time"

	goslack "github.com/slack-go/slack"

	"github.com/cakework-relay/cakework-relay/internal/event"
	"github.com/cakework-relay/cakework-relay/internal/sinks/slack/headline"
)

// message is one Slack message: Block Kit blocks, and the plain-text
// fallback Slack shows in notifications and to clients without blocks
// (already escaped for Slack: &amp; &lt; &gt;).
type message struct {
	Text   string
	Blocks []goslack.Block
}

// Slack's limits (section text 3000, fields 10 per section, 2000 each);
// we stay under them with room for the markup.
const (
	maxSectionText = 2900
	maxFields      = 10
	maxFieldText   = 1900
)

// rich is text written twice at once: as Slack mrkdwn (escaped, with code
// spans and date tokens) and as plain text for the fallback.
type rich struct{ md, plain strings.Builder }

var mdEscaper = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;")

func esc(s string) string { return mdEscaper.Replace(s) }

func (r *rich) lit(s string) *rich { r.md.WriteString(esc(s)); r.plain.WriteString(s); return r }

func (r *rich) code(s string) *rich {
	s = strings.ReplaceAll(s, "`", "'")
	r.md.WriteString("`" + esc(s) + "`")
	r.plain.WriteString(s)
	return r
}

func (r *rich) bold(s string) *rich {
	r.md.WriteString("*" + esc(s) + "*")
	r.plain.WriteString(s)
	return r
}

// emoji goes into both: Slack renders :shortcodes: in notifications too.
func (r *rich) emoji(s string) *rich {
	r.md.WriteString(s + " ")
	r.plain.WriteString(s + " ")
	return r
}

// at shows a time in the reader's own time zone (a Slack date token), with
// UTC as the fallback.
func (r *rich) at(t time.Time) *rich {
	r.md.WriteString(dateToken(t))
	r.plain.WriteString(utc(t))
	return r
}

func (r *rich) String() string { return r.plain.String() }

func utc(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") }

func dateToken(t time.Time) string {
	return fmt.Sprintf("<!date^%d^{date_short_pretty} {time_secs}|%s>", t.Unix(), utc(t))
}

// field is one label/value pair of a card.
type field struct {
	label string
	value *rich
}

func fieldOf(label string, f func(r *rich)) field {
	r := &rich{}
	f(r)
	return field{label, r}
}

// view is what a message shows, before it becomes blocks and text.
type view struct {
	headline  *rich
	override  string // a template's output replaces the headline
	fields    []field
	tailTitle string
	tail      []string
	body      string // a code block (generic webhooks)
	list      *rich  // a summary's list of events
	context   *rich
}

func (v view) message() message {
	var blocks []goslack.Block
	var text strings.Builder

	head, plainHead := v.headline.md.String(), v.headline.plain.String()
	if v.override != "" {
		head, plainHead = clip(v.override, maxSectionText), v.override
	}
	blocks = append(blocks, goslack.NewSectionBlock(md(head), nil, nil))
	if v.override != "" {
		text.WriteString(plainHead)
	} else {
		text.WriteString(esc(plainHead))
	}

	for i := 0; i < len(v.fields); i += maxFields {
		chunk := v.fields[i:min(i+maxFields, len(v.fields))]
		objs := make([]*goslack.TextBlockObject, 0, len(chunk))
		for _, f := range chunk {
			objs = append(objs, md(clip("*"+esc(f.label)+"*\n"+f.value.md.String(), maxFieldText)))
			fmt.Fprintf(&text, "\n%s: %s", esc(f.label), esc(f.value.plain.String()))
		}
		blocks = append(blocks, goslack.NewSectionBlock(nil, objs, nil))
	}
	if len(v.tail) > 0 {
		lines, shown := fitCode(v.tail, maxSectionText-len(v.tailTitle)-20)
		title := v.tailTitle
		if shown < len(v.tail) {
			title = fmt.Sprintf("%s (the last %d that fit)", title, shown)
		}
		blocks = append(blocks, goslack.NewSectionBlock(md("*"+esc(title)+"*\n```\n"+esc(lines)+"\n```"), nil, nil))
		fmt.Fprintf(&text, "\n%s:\n%s", esc(title), esc(lines))
	}
	if v.body != "" {
		body := clip(v.body, 1500)
		blocks = append(blocks, goslack.NewSectionBlock(md("```\n"+esc(strings.ReplaceAll(body, "```", "'''"))+"\n```"), nil, nil))
		fmt.Fprintf(&text, "\n%s", esc(body))
	}
	if v.list != nil {
		blocks = append(blocks, goslack.NewSectionBlock(md(v.list.md.String()), nil, nil))
		fmt.Fprintf(&text, "\n%s", esc(v.list.plain.String()))
	}
	if v.context != nil {
		blocks = append(blocks, goslack.NewContextBlock("", md(v.context.md.String())))
		fmt.Fprintf(&text, "\n%s", esc(v.context.plain.String()))
	}
	return message{Text: text.String(), Blocks: blocks}
}

func md(s string) *goslack.TextBlockObject {
	return goslack.NewTextBlockObject(goslack.MarkdownType, s, false, false)
}

// fitCode joins the newest lines that fit in n bytes, oldest first, and
// says how many it kept. "```" inside a line would end the code block.
func fitCode(lines []string, n int) (string, int) {
	var kept []string
	size := 0
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.ReplaceAll(lines[i], "```", "'''")
		// Escaping can grow a line; count the escaped size.
		if size+len(esc(l))+1 > n && len(kept) > 0 {
			break
		}
		kept = append(kept, l)
		size += len(esc(l)) + 1
	}
	for i, j := 0, len(kept)-1; i < j; i, j = i+1, j-1 {
		kept[i], kept[j] = kept[j], kept[i]
	}
	return strings.Join(kept, "\n"), len(kept)
}

// statusWord is how a status reads on a card: a build that is "created"
// upstream is building.
func statusWord(kind, s string) string {
	if kind == event.KindBuild && s == "created" {
		return "building"
	}
	if s == "" {
		return "unknown"
	}
	return s
}

func statusEmoji(kind, s string) string {
	switch kind + "." + s {
	case "build.created":
		return ":hammer_and_wrench:"
	case "build.succeeded":
		return ":white_check_mark:"
	case "build.failed":
		return ":x:"
	case "vm.created":
		return ":new:"
	case "vm.started":
		return ":large_green_circle:"
	case "vm.stopped":
		return ":red_circle:"
	case "vm.destroyed":
		return ":wastebasket:"
	}
	return ":information_source:"
}

func noun(kind string) string {
	switch kind {
	case event.KindBuild:
		return "Build"
	case event.KindVM:
		return "VM"
	case event.KindFunctionBuild:
		return "Function build"
	}
	return kind
}

// fields are a resource's facts as a card shows them.
func (f facts) fields() []field {
	dash := func(s string) func(r *rich) {
		return func(r *rich) {
			if s == "" {
				r.lit("—")
			} else {
				r.code(s)
			}
		}
	}
	var out []field
	add := func(label string, fn func(r *rich)) { out = append(out, fieldOf(label, fn)) }
	addTime := func(label string, t time.Time) {
		if !t.IsZero() {
			add(label, func(r *rich) { r.at(t) })
		}
	}
	add(noun(f.Kind), dash(f.ID))
	status := func(r *rich) {
		r.lit(statusWord(f.Kind, f.Status))
		if f.Previous != "" && f.Previous != f.Status {
			r.lit(" (was " + statusWord(f.Kind, f.Previous) + ")")
		}
	}
	switch f.Kind {
	case event.KindBuild:
		add("Status", status)
		add("Image", dash(f.ImageID))
		addTime("Started", f.CreatedAt)
		addTime("Finished", f.FinishedAt)
		if d := f.duration(); d > 0 {
			add("Duration", func(r *rich) { r.lit(human(d)) })
		}
	case event.KindVM:
		add("State", status)
		add("Hostname", dash(f.Hostname))
		add("Image", dash(f.ImageID))
		addTime("Started", f.StartedAt)
		if f.Status == "stopped" || f.Status == "destroyed" {
			addTime("Stopped", f.FinishedAt)
			if d := f.duration(); d > 0 {
				add("Ran for", func(r *rich) { r.lit(human(d)) })
			}
		}
		addTime("Idle since", f.IdleSince)
		if f.IdleFor > 0 {
			add("Idle for", func(r *rich) { r.lit(human(f.IdleFor)) })
		}
		if !f.StopAt.IsZero() {
			label := "Auto-stop at"
			if f.AutoStopped {
				label = "Auto-stopped at"
			}
			addTime(label, f.StopAt)
		}
		if f.DryRun {
			add("Dry run", func(r *rich) { r.lit("yes: nothing is stopped") })
		}
	}
	return out
}

// cardHeadline is the parent message's first line: the resource's current
// status.
func (f facts) cardHeadline() *rich {
	r := &rich{}
	switch {
	case f.Kind == event.KindVM && f.AutoStopped:
		return autostopHeadline(f)
	case f.Kind == event.KindVM && !f.IdleSince.IsZero():
		return idleHeadline(f)
	case f.Kind == event.KindBuild && f.Stuck && !buildFinished(f.Status):
		r.emoji(":hourglass:").bold(noun(f.Kind)).lit(" ").code(f.ID).lit(" is still building and looks stuck")
		return r
	}
	r.emoji(statusEmoji(f.Kind, f.Status)).bold(noun(f.Kind)).lit(" ").code(f.ID)
	switch {
	case f.Status == "":
	case f.Kind == event.KindBuild && buildFinished(f.Status):
		r.lit(" " + f.Status)
	default:
		r.lit(" is " + statusWord(f.Kind, f.Status))
	}
	return r
}

func idleHeadline(f facts) *rich {
	r := &rich{}
	r.emoji(":zzz:").bold("VM").lit(" ").code(f.ID).lit(" is idle")
	if !f.IdleSince.IsZero() {
		r.lit(" since ").at(f.IdleSince)
	}
	switch {
	case f.DryRun && !f.StopAt.IsZero():
		r.lit("; it would be stopped at ").at(f.StopAt).lit(" (dry run: nothing will be stopped)")
	case f.DryRun:
		r.lit("; it would be stopped soon (dry run: nothing will be stopped)")
	case !f.StopAt.IsZero():
		r.lit("; it will be stopped at ").at(f.StopAt).lit(" unless it gets busy")
	default:
		r.lit("; it will be stopped soon unless it gets busy")
	}
	return r
}

func autostopHeadline(f facts) *rich {
	r := &rich{}
	after := ""
	if f.IdleFor > 0 {
		after = " after " + human(f.IdleFor) + " idle"
	} else {
		after = " for being idle"
	}
	if f.DryRun {
		r.emoji(":octagonal_sign:").bold("VM").lit(" ").code(f.ID).lit(" would have been stopped" + after + " (dry run: it is still running)")
		return r
	}
	r.emoji(":octagonal_sign:").bold("VM").lit(" ").code(f.ID).lit(" was stopped by the relay" + after)
	return r
}

// eventHeadline is the first line of an event's own message.
func eventHeadline(e event.Event, f facts, d data, nLines int) *rich {
	r := &rich{}
	kind, action, id := e.Kind(), e.Action(), e.Subject
	switch {
	case action == "log" && kind != event.KindWebhook:
		r.emoji(":page_facing_up:").bold(noun(kind)).lit(" ").code(id).lit(": " + plural(nLines, "new log line", "new log lines"))
	case kind == event.KindBuild && action == "stuck":
		r.emoji(":hourglass:").bold("Build").lit(" ").code(id).lit(" looks stuck")
		if after := d.dur("stuckAfter", "after"); after > 0 {
			r.lit(": still building after " + human(after))
		} else if !f.CreatedAt.IsZero() && e.Time.After(f.CreatedAt) {
			r.lit(": still building after " + human(e.Time.Sub(f.CreatedAt)))
		}
	case kind == event.KindVM && action == "idle":
		return idleHeadline(f)
	case kind == event.KindVM && action == "autostopped":
		return autostopHeadline(f)
	case statusEvent(e):
		r.emoji(statusEmoji(kind, action)).bold(noun(kind)).lit(" ").code(id)
		switch {
		case kind == event.KindBuild && action == "created":
			r.lit(" is building")
		case kind == event.KindBuild:
			r.lit(" " + action)
		case action == "created" || action == "started" || action == "stopped" || action == "destroyed":
			r.lit(" " + action)
		default:
			r.lit(" is now " + action)
		}
	case kind == event.KindWebhook:
		r.emoji(":incoming_envelope:").bold("Webhook").lit(" ").code(action).lit(" received")
	default:
		r.emoji(":information_source:").code(e.ShortType()).lit(" for ").code(id)
	}
	return r
}

// eventContext is the small print under an event's message.
func eventContext(e event.Event, d data) *rich {
	r := &rich{}
	r.code(e.ShortType()).lit(" · ").at(e.Time)
	if by := d.str("observedBy"); by != "" {
		r.lit(" · via " + by)
	}
	return r
}

// TemplateData is what a templates override sees.
type TemplateData = headline.Data

// summaryMessage is the one message that stands for a burst of events of
// one type.
func summaryMessage(p pending, threshold int, window time.Duration) message {
	r := &rich{}
	r.emoji(":rotating_light:").bold(fmt.Sprintf("%d × %s", p.Count, p.Type))
	r.lit(fmt.Sprintf(" (more than %d in %s, so they are summarised here instead of posted one by one)", threshold, human(window)))
	list := &rich{}
	shown, size := 0, 0
	for _, it := range p.Items {
		line := &rich{}
		line.lit("• ").code(it.Subject).lit(" " + it.Action + " · " + it.Time.UTC().Format("15:04:05"))
		if it.Detail != "" {
			line.lit(" · " + it.Detail)
		}
		if size+line.md.Len()+40 > maxSectionText {
			break
		}
		if shown > 0 {
			list.lit("\n")
		}
		list.md.WriteString(line.md.String())
		list.plain.WriteString(line.plain.String())
		size += line.md.Len() + 1
		shown++
	}
	if more := p.Count - shown; more > 0 {
		list.lit(fmt.Sprintf("\n…and %d more", more))
	}
	ctx := &rich{}
	if len(p.Items) > 0 {
		ctx.lit("first ").at(p.Items[0].Time).lit(" · last ").at(p.Items[len(p.Items)-1].Time)
	}
	v := view{headline: r, list: list, context: ctx}
	return v.message()
}
