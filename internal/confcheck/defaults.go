package confcheck

import (
	"fmt"
	"reflect"
	"strconv"
	"time"
)

// ApplyDefaults sets every zero field of the struct p points to, and of the
// structs it holds, to the value in the field's `default` tag: how a
// section's WithDefaults fills its unset fields (an empty or zero value in a
// file gets the default, the same as a missing key). A tag is a duration
// (30m) on a time.Duration, else a number on an int or float, else a string.
// Fields without the tag, booleans, pointers and slices are left alone. A
// tag that does not parse panics: it is a mistake in the code, not in a
// config.
func ApplyDefaults(p any) {
	v := reflect.ValueOf(p)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		panic(fmt.Sprintf("confcheck.ApplyDefaults: %T is not a pointer to a struct", p))
	}
	applyDefaults(v.Elem())
}

var durationType = reflect.TypeFor[time.Duration]()

func applyDefaults(s reflect.Value) {
	t := s.Type()
	for i := range t.NumField() {
		f, sf := s.Field(i), t.Field(i)
		if !sf.IsExported() {
			continue
		}
		if f.Kind() == reflect.Struct {
			applyDefaults(f)
			continue
		}
		tag, ok := sf.Tag.Lookup("default")
		if !ok || !f.IsZero() {
			continue
		}
		if err := setDefault(f, tag); err != nil {
			panic(fmt.Sprintf("confcheck.ApplyDefaults: %s.%s: default %q: %v", t, sf.Name, tag, err))
		}
	}
}

func setDefault(f reflect.Value, tag string) error {
	if f.Type() == durationType {
		d, err := time.ParseDuration(tag)
		f.SetInt(int64(d))
		return err
	}
	switch f.Kind() {
	case reflect.String:
		f.SetString(tag)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		n, err := strconv.ParseInt(tag, 0, f.Type().Bits())
		f.SetInt(n)
		return err
	case reflect.Float32, reflect.Float64:
		x, err := strconv.ParseFloat(tag, f.Type().Bits())
		f.SetFloat(x)
		return err
	default:
		return fmt.Errorf("a default tag on a %s", f.Type())
	}
	return nil
}
